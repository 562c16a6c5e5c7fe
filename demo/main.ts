// The demo (`npm run demo`): a whole intercept on the lab, narrated, with the commands a user would type.
// It brings the lab up (unless it already runs), installs the chart, deploys an echo app, connects from
// the workstation, intercepts the app, shows a request from inside the cluster reaching the local
// process, leaves, shows the request reaching the cluster again, and cleans up everything it made.
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cachedBinDir } from '../lab/binaries.js';
import { labPaths } from '../lab/paths.js';
import { labStatus } from '../lab/status.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tpLab = path.join(root, 'dist', 'lab', 'main.js');
const tpCli = path.join(root, 'dist', 'cli', 'main.js');
const keep = process.argv.includes('--keep');
const NS = 'tp-demo';
const LOCAL_PORT = 18090;

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s: string) => process.stdout.write(`\n${bold(`== ${s}`)}\n`);

interface Result {
  code: number;
  out: string;
}

/** Runs a command, echoing it as a user would type it, and its output. */
function run(
  shown: string,
  argv: string[],
  opts: { check?: boolean; quiet?: boolean; input?: string } = {},
): Promise<Result> {
  process.stdout.write(`$ ${shown}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const take = (d: Buffer) => {
      out += d.toString();
      if (!opts.quiet) process.stdout.write(d);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (code) => {
      const r = { code: code ?? 1, out };
      if (r.code !== 0 && opts.check !== false) reject(new Error(`\`${shown}\` failed (exit ${r.code})`));
      else resolve(r);
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** How a shell user would type the word. */
const shellWord = (w: string) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`);
const kubectl = path.join(cachedBinDir(), 'kubectl');
const helm = path.join(cachedBinDir(), 'helm');
const hostKube = (args: string[], opts?: { check?: boolean; quiet?: boolean; input?: string }) =>
  run(
    `kubectl ${args.map(shellWord).join(' ')}`,
    ['env', `KUBECONFIG=${labPaths().kubeconfig}`, kubectl, ...args],
    opts,
  );
/** tp on the workstation (the lab's tplab-ws namespace, which reaches only the API server). */
const tp = (args: string[], opts?: { check?: boolean }) =>
  run(
    `tp ${args.join(' ')}`,
    [process.execPath, tpLab, 'exec', '--', 'env', `TP_HELM=${helm}`, process.execPath, '--', tpCli, ...args],
    opts,
  );

async function curlFromCluster(): Promise<string> {
  const r = await hostKube(
    ['exec', '-n', NS, 'client', '--', 'curl', '-s', '--max-time', '5', `http://echo.${NS}/`],
    {
      check: false,
    },
  );
  return r.out.trim();
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

const echoApp = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, labels: {app: echo}}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: echo
          image: lab/echo:1
          env: [{name: PORT, value: "8080"}]
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {selector: {app: echo}, ports: [{name: http, port: 80, targetPort: 8080}]}
`;

const laptopApp = `require('node:http').createServer((q, s) => s.end('hello from the laptop\\n')).listen(${LOCAL_PORT}, '127.0.0.1', () => console.log('listening'))`;

let broughtUp = false;
let laptop: ChildProcess | undefined;

async function cleanup(): Promise<void> {
  if (keep) {
    say(`--keep: leaving the lab, the chart, namespace ${NS} and the connection as they are`);
    return;
  }
  say('Cleaning up');
  await tp(['quit'], { check: false });
  laptop?.kill('SIGTERM');
  await tp(['helm', 'uninstall'], { check: false });
  await hostKube(['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
  if (broughtUp) await run('tp-lab down', [process.execPath, tpLab, 'down'], { check: false });
}

async function demo(): Promise<void> {
  say('The lab: a real Kubernetes control plane and node on this machine');
  if ((await labStatus().catch(() => undefined))?.state !== 'running') {
    broughtUp = true;
    await run('tp-lab up', [process.execPath, tpLab, 'up']);
  } else process.stdout.write('(the lab is already running)\n');

  say('Install the traffic manager with its Helm chart');
  const install = await tp(['helm', 'install'], { check: false });
  if (install.code !== 0) {
    if (!/already installed/.test(install.out)) throw new Error('tp helm install failed');
    await tp(['helm', 'upgrade']);
  }

  say('Deploy an echo app (2 replicas behind a Service) and a client pod');
  await hostKube(['create', 'namespace', NS], { check: false, quiet: true });
  await hostKube(['apply', '-n', NS, '-f', '-'], { input: echoApp });
  await hostKube(
    [
      'run',
      'client',
      '-n',
      NS,
      '--image=lab/shell:1',
      '--restart=Never',
      '--',
      'sh',
      '-c',
      'trap "exit 0" TERM; sleep 3600 & wait',
    ],
    {
      check: false,
    },
  );
  await hostKube(['rollout', 'status', '-n', NS, 'deploy/echo', '--timeout=180s']);
  await hostKube(['wait', '-n', NS, '--for=condition=Ready', 'pod/client', '--timeout=120s']);

  say(`A local process on the workstation, answering on 127.0.0.1:${LOCAL_PORT}`);
  process.stdout.write(`$ node -e "http.createServer(...'hello from the laptop').listen(${LOCAL_PORT})" &\n`);
  laptop = spawn(process.execPath, [tpLab, 'exec', '--', process.execPath, '-e', laptopApp], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    laptop!.stdout!.once('data', () => resolve());
    laptop!.once('exit', (code) => reject(new Error(`the local app exited (code ${code})`)));
  });

  say('Connect from the workstation (a port-forward through the API server; nothing else is exposed)');
  await tp(['connect']);

  say('A client in the cluster calls the echo Service: a pod answers');
  const before = await curlFromCluster();
  if (!before.startsWith('echo-')) throw new Error(`expected an echo pod's answer, got "${before}"`);

  say('Intercept the echo workload: its port 8080 now goes to the workstation');
  await tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:8080`]);
  await tp(['list', '-n', NS]);
  await until(
    'the Service to reach the workstation',
    async () => (await curlFromCluster()) === 'hello from the laptop',
  );

  say('Leave the intercept: the cluster answers again');
  await tp(['leave', 'echo']);
  await until('the Service to reach the pods again', async () =>
    (await curlFromCluster()).startsWith('echo-'),
  );

  say(
    'Done: a request from inside the cluster reached the local process, and went back to the cluster after tp leave',
  );
}

let failed = false;
process.on('SIGINT', () => {
  failed = true;
});
try {
  await demo();
} catch (err) {
  failed = true;
  process.stderr.write(`\ndemo failed: ${(err as Error).message}\n`);
} finally {
  await cleanup();
}
process.exit(failed ? 1 : 0);
