// End to end with eBPF capture and the real tp binaries: the manager, the tp CLI, its user daemon and a
// "laptop" app run in the client namespace (the cluster network and the workstation at once); the app and
// tp-agent (TP_MECHANISM=ebpf) run in the pod namespace, where tp_steer is attached.
//   no intercept      -> the app answers, and sees the client itself as its peer (no hop)
//   intercept active  -> the agent gets the connection with localPort 8080 and sends it to the laptop
//   tp leave          -> the app answers directly again
//   probes            -> while intercepted, even with the laptop's app stopped, the agent's probe port
//                        checks the app in the pod and forwards nothing to the laptop
//   worker killed     -> tp-agent-holder keeps the socket: the request waits for the new worker (the app
//                        answers), then the intercept is back
//   agent killed      -> (holder and worker) the app answers the next request (fail-open)
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { encodeProbes } from '../../probes/spec.js';
import { type BpffsMount, ensureBpffs } from '../../testbed/bpffs.js';
import {
  createPodTestbed,
  onProcessEnd,
  type PodTestbed,
  RESPONDER,
  teardownEbpfBed,
  waitForLine,
} from '../../testbed/pod-testbed.js';
import { pidExists } from '../../testbed/processes.js';
import { apply, cleanup, status } from '../mechanism.js';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bins = {
  manager: path.join(dist, 'manager/main.js'),
  cli: path.join(dist, 'cli/main.js'),
  // TP_E2E_AGENT_BUNDLE: try another agent build (e.g. one with the eBPF integration before it lands).
  agent: process.env.TP_E2E_AGENT_BUNDLE || path.join(dist, 'bundle/tp-agent.cjs'),
  // The agent runs as in tp's image: tp-agent-holder holds its sockets and runs it as its worker.
  holder: path.join(dist, 'bundle/tp-agent-holder.cjs'),
};
const APP_PORT = 8080;
const AGENT_PORT = 15001;
const LAPTOP_PORT = 18080;
const MANAGER_PORT = 18081;
const PROBE_PORT = 15021;
const prefix = `tpe-${process.pid % 100000}`;
const pinRoot = `/sys/fs/bpf/${prefix}`;
let dir: string;
let env: NodeJS.ProcessEnv;

/** The binaries this test runs, all built by `node build.mjs`: a missing one fails the test, saying so. */
function checkBinaries(): void {
  for (const [name, file] of Object.entries(bins))
    if (!fs.existsSync(file)) throw new Error(`${name} (${file}) is not built: run node build.mjs`);
}

let bpffs: BpffsMount | undefined;
let bed: PodTestbed;
let agent: ChildProcess | undefined;
let laptopApp: ChildProcess | undefined;
const processes: ChildProcess[] = [];
let daemonPid: number | undefined;

interface Answer {
  who: string;
  peer: string;
  localPort: number;
}
const ask = async (): Promise<Answer> =>
  JSON.parse(await bed.curlFromClient(`http://${bed.podIp}:${APP_PORT}/`)) as Answer;

const eventually = <T>(what: string, check: () => Promise<T | undefined>) =>
  waitFor(what, check, 20_000, 200);

function inNetns(
  netns: string,
  args: string[],
  extraEnv: NodeJS.ProcessEnv = {},
  log?: string,
): ChildProcess {
  const out = log ? fs.openSync(path.join(dir, log), 'a') : 'ignore';
  const argv = [`--net=/run/netns/${netns}`, 'setpriv', '--pdeathsig', 'KILL', process.execPath, ...args];
  const child = spawn('nsenter', argv, {
    env: { ...env, ...extraEnv },
    stdio: ['ignore', log ? out : 'pipe', log ? out : 'inherit'],
  });
  if (typeof out === 'number') fs.closeSync(out);
  processes.push(child);
  return child;
}

/** The tp CLI in the client namespace (its user daemon stays there). */
function tp(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      'nsenter',
      [`--net=/run/netns/${bed.clientNetns}`, process.execPath, bins.cli, ...args],
      {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function startLaptop(): Promise<ChildProcess> {
  const child = inNetns(bed.clientNetns, [RESPONDER, 'laptop', String(LAPTOP_PORT)]);
  await waitForLine(child, /^ready/);
  return child;
}

/** The kubelet's rewritten readiness probe: a GET to the agent's probe port from the node's side. */
const askProbe = () => bed.curlFromClient(`http://${bed.podIp}:${PROBE_PORT}/tp-probe/app/readiness`);

/** How many connections the agent has forwarded to the laptop so far (it logs each at debug level). */
const forwarded = () =>
  fs.readFileSync(path.join(dir, 'agent.log'), 'utf8').split('forwarding intercepted connection').length - 1;

function startAgent(): ChildProcess {
  return inNetns(
    bed.podNetns,
    [bins.holder, process.execPath, bins.agent],
    {
      TP_MANAGER_ADDRESS: `${bed.clientIp}:${MANAGER_PORT}`,
      TP_WORKLOAD_NAME: 'echo',
      TP_NAMESPACE: 'default',
      TP_POD_NAME: 'echo-0',
      TP_POD_IP: bed.podIp,
      TP_PORTS: `${APP_PORT}:${AGENT_PORT}`,
      TP_MECHANISM: 'ebpf',
      TP_PROBE_PORT: String(PROBE_PORT),
      TP_PROBES: encodeProbes([
        {
          container: 'app',
          kind: 'readiness',
          timeoutSeconds: 1,
          httpGet: { port: APP_PORT, scheme: 'HTTP', path: '/', httpHeaders: [] },
        },
      ]),
      TP_BPF_PIN_ROOT: pinRoot,
      TP_LOG_LEVEL: 'debug',
    },
    'agent.log',
  );
}

/** The agent workers the holder started, oldest first (from its log). */
const workerPids = () =>
  [...fs.readFileSync(path.join(dir, 'agent.log'), 'utf8').matchAll(/agent worker started pid=(\d+)/g)].map(
    (m) => Number(m[1]),
  );

function logs(): string {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.log'))
    .map((f) => `--- ${f}\n${fs.readFileSync(path.join(dir, f), 'utf8').slice(-3000)}`)
    .join('\n');
}

function teardown(): void {
  // The holder dies with its nsenter (pdeathsig); its workers would not.
  const workers = dir && fs.existsSync(path.join(dir, 'agent.log')) ? workerPids() : [];
  for (const pid of [...(daemonPid ? [daemonPid] : []), ...workers]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const child of processes)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  teardownEbpfBed(bed, pinRoot, bpffs, cleanup);
  if (dir && process.env.TP_KEEP_TEST_DIRS !== '1') fs.rmSync(dir, { recursive: true, force: true });
}

onProcessEnd(teardown);

test.before(async () => {
  checkBinaries();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpe-e2e-'));
  env = { ...process.env, TP_RUN_DIR: path.join(dir, 'run'), TP_LOG_DIR: path.join(dir, 'log') };
  bpffs = ensureBpffs();
  bed = createPodTestbed(prefix, '10.250.0');
  await waitForLine(bed.spawnInPod(process.execPath, [RESPONDER, 'app', String(APP_PORT)]), /^ready/);
  laptopApp = await startLaptop();
  inNetns(
    bed.clientNetns,
    [bins.manager, '--standalone', '--listen', `${bed.clientIp}:${MANAGER_PORT}`],
    {},
    'manager.log',
  );
  apply({ ports: [APP_PORT], netnsPath: bed.podNetnsPath, pinRoot });
  agent = startAgent();
});
test.after(teardown);

test('intercept through eBPF capture, end to end', async () => {
  try {
    // No intercept: straight to the app, which sees the client itself.
    assert.equal(await ask(), { who: 'app', peer: bed.clientIp, localPort: APP_PORT });

    const connect = await tp('connect', '--manager-address', `${bed.clientIp}:${MANAGER_PORT}`);
    assert.is(connect.code, 0, connect.stderr);
    daemonPid = JSON.parse((await tp('status', '-o', 'json')).stdout).daemon?.pid;
    await eventually('the agent in tp list', async () => {
      const list = JSON.parse((await tp('list', '-o', 'json')).stdout);
      return list.workloads?.length > 0 ? true : undefined;
    });
    const intercept = await tp('intercept', 'echo', '--port', `${LAPTOP_PORT}:${APP_PORT}`);
    assert.is(intercept.code, 0, intercept.stderr);

    // Intercept active: steered to the agent (no NAT: it learns the port from localPort) and on to the laptop.
    const laptop = await eventually('the laptop to answer', async () => {
      const a = await ask();
      return a.who === 'laptop' ? a : undefined;
    });
    assert.is(laptop.who, 'laptop');
    const steered = status({ netnsPath: bed.podNetnsPath, pinRoot }).ports[0]!;
    assert.is(steered.steering, true);
    assert.ok(steered.stats.steered >= 1n);

    // Probes while intercepted: the probe port is not steered, and the agent checks the app in the pod.
    const before = forwarded();
    assert.ok(before >= 1, 'the laptop answer was forwarded by the agent');
    const readiness = `app/readiness: GET http://${bed.podIp}:${APP_PORT}/: status 200\n`;
    assert.is(await askProbe(), readiness);
    // The developer stops the laptop's app: clients fail, the pod's readiness does not.
    const stopped = new Promise((r) => laptopApp!.once('exit', r));
    laptopApp!.kill('SIGTERM');
    await stopped;
    const failed = await ask().then(
      () => 'answered',
      () => 'failed',
    );
    assert.is(failed, 'failed');
    assert.is(await askProbe(), readiness);
    assert.is(forwarded(), before + 1, 'only the client connection was forwarded, no probe');
    laptopApp = await startLaptop();

    // Leave: the agent takes its listener out, the app answers directly again.
    assert.is((await tp('leave', 'echo')).code, 0);
    const back = await eventually('the app to answer again', async () => {
      const a = await ask();
      return a.who === 'app' ? a : undefined;
    });
    assert.equal(back, { who: 'app', peer: bed.clientIp, localPort: APP_PORT });

    // Intercept again, then kill the agent: the next request reaches the app.
    assert.is((await tp('intercept', 'echo', '--port', `${LAPTOP_PORT}:${APP_PORT}`)).code, 0);
    await eventually('the laptop to answer again', async () =>
      (await ask()).who === 'laptop' ? true : undefined,
    );
    // Kill the worker: the holder keeps the listening socket (and its steering entry), so the next
    // request waits in its backlog for the new worker, which passes it to the app (no session yet) and
    // takes the stale entry out; the
    // intercept comes back with the worker's new session.
    const worker = workerPids().at(-1)!;
    process.kill(worker, 'SIGKILL');
    // Through the new worker's passthrough: the app sees it from loopback.
    assert.equal(await ask(), { who: 'app', peer: '127.0.0.1', localPort: APP_PORT });
    assert.is.not(workerPids().at(-1), worker, 'a new worker serves');
    await eventually('the laptop to answer again after the worker restarted', async () =>
      (await ask()).who === 'laptop' ? true : undefined,
    );

    // Kill the holder and its worker (the whole agent container): the socket closes, the kernel drops its
    // steering entry, and the next request reaches the app.
    const exited = new Promise((r) => agent!.once('exit', r));
    agent!.kill('SIGKILL');
    await exited;
    process.kill(workerPids().at(-1)!, 'SIGKILL');
    await waitFor('the worker to be gone', () => !pidExists(workerPids().at(-1)!), 5_000, 20);
    assert.equal(await ask(), { who: 'app', peer: bed.clientIp, localPort: APP_PORT });
    assert.is(status({ netnsPath: bed.podNetnsPath, pinRoot }).ports[0]!.steering, false);

    assert.is((await tp('quit')).code, 0);
  } catch (e) {
    console.error(logs());
    throw e;
  }
});

test.run();
