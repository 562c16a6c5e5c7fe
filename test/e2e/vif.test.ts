// Issue 6 acceptance: after `tp connect` (nothing but the kubeconfig), any program on the workstation reaches
// the cluster's Services and Pods by name and IP through the VIF, and `tp quit` (or a killed root daemon
// and the next connect) leaves the workstation as it was. On the lab (and tp-kind) the workstation is a
// network namespace of its own (tplab-ws, tpkind-ws): its /etc/resolv.conf is its own file (`tp-lab exec`
// and `tp-kind exec` bind-mount it), and the host's must never change.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import * as assert from 'uvu/assert';
import type { StatusView, VifView } from '../../cli/output.js';
import { repoRoot } from './cluster.js';
import {
  apply,
  type Background,
  ensureChart,
  freshNamespace,
  kubectl,
  kubectlJson,
  listPods,
  onWorkstation,
  rolloutStatus,
  startOnWorkstation,
  tpOnWorkstation,
  waitFor,
  waitForEndpoints,
} from './kube.js';
import { afterSetup, clusterSuite, scenarioIf } from './suite.js';
import {
  checkSequential,
  echoDeployment,
  echoService,
  patternHash,
  sendPatternSource,
  sequentialClientSource,
} from './workloads.js';

const NS = 'tp-e2e-vif';
const MiB = 1024 * 1024;
const OUTSIDE_NAME = 'outside.tp-e2e.test';
const OUTSIDE_IP = '192.0.2.7';
const scratch = '/tmp/tpv-e2e-vif';
const rootStateDir = `${scratch}/root-state`;

const { test, cluster } = await clusterSuite('workstation VIF');

/** A pod serving GET /bytes?n=N (a fixed pattern) on 8080 and a UDP echo ("echo:" + datagram) on 5353. */
const fileServer = `
const http = require('node:http');
const dgram = require('node:dgram');
${sendPatternSource}
http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/bytes') return res.end('fileserver\\n');
  sendPattern(res, Number(url.searchParams.get('n')));
}).listen(8080);
const udp = dgram.createSocket('udp4');
udp.on('message', (m, from) => udp.send(Buffer.concat([Buffer.from('echo:'), m]), from.port, from.address));
udp.bind(5353);
`;

/** One datagram to HOST:PORT from the workstation; prints the answer. */
const udpClient = (host: string, port: number) => `
const s = require('node:dgram').createSocket('udp4');
setTimeout(() => { console.log('no answer within 10 s'); process.exit(1); }, 10000);
s.on('message', (m) => { console.log(m.toString()); process.exit(0); });
s.send('hello', ${port}, '${host}');
`;

/** N connections at once to http://HOST/, each must get an echo pod's answer; prints {ok, failed}. */
const concurrentClient = (host: string, n: number) => `
const http = require('node:http');
const agent = new http.Agent({ keepAlive: false, maxSockets: ${n} });
const one = () => new Promise((resolve) => {
  const req = http.get({ host: '${host}', port: 80, path: '/', agent, timeout: 60000 }, (res) => {
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => resolve(body.startsWith('echo-')));
    res.on('error', () => resolve(false));
  });
  req.on('error', () => resolve(false));
  req.on('timeout', () => req.destroy());
});
Promise.all(Array.from({ length: ${n} }, one)).then((r) =>
  console.log(JSON.stringify({ ok: r.filter(Boolean).length, failed: r.filter((x) => !x).length })));
`;

/** `tp status -o json` of a connected workstation. */
type StatusJson = Extract<StatusView, { sessionId: string }>;

if (cluster) {
  const c = cluster;
  /** A workstation namespace of its own (the lab's, tp-kind's): its resolver and its one route are known. */
  const api = c.workstation.apiServer;
  const isolated = api !== undefined;
  /** The resolver file tp manages on this workstation. */
  const resolvConf = c.workstation.resolvConf;
  /** The /24 around the API server, for --also-proxy. */
  const apiNet = api ? `${api.ip.split('.').slice(0, 3).join('.')}.0/24` : '';
  const routeViaOwnLink = async () =>
    assert.match(await wsText(['ip', 'route', 'get', api!.ip]), new RegExp(`dev ${api!.dev}\\b`));
  const tp = tpOnWorkstation(c, scratch, {
    TP_ROOT_DAEMON_SOCKET: `${scratch}/root.socket`,
    TP_ROOT_DAEMON_STATE_DIR: rootStateDir,
  });
  const ws = (argv: string[], timeoutMs = 60_000) => onWorkstation(c, argv, { check: false, timeoutMs });
  const wsText = async (argv: string[], timeoutMs = 60_000) => {
    const r = await ws(argv, timeoutMs);
    assert.is(r.code, 0, `${argv.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout.trim();
  };
  const status = async () => JSON.parse((await tp(['status', '-o', 'json'])).stdout) as StatusJson;
  const rootDaemonPid = (): number | undefined => {
    try {
      return (JSON.parse(fs.readFileSync(`${rootStateDir}/root-daemon.json`, 'utf8')) as { pid: number }).pid;
    } catch {
      return undefined;
    }
  };
  const alive = (pid: number | undefined) => {
    if (!pid) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  /** What tp may leave on the workstation: nothing after quit. */
  const leftovers = async (): Promise<string[]> => {
    const found: string[] = [];
    if ((await ws(['ip', 'link', 'show', 'dev', 'tp0'])).code === 0) found.push('tp0 exists');
    if ((await wsText(['ip', 'rule', 'show'])).includes('7470')) found.push('ip rule 7470');
    if ((await wsText(['ip', 'route', 'show', 'table', 'all'])).includes('table 7470'))
      found.push('routes in table 7470');
    if (!fs.readFileSync(resolvConf).equals(resolvBefore)) found.push(`${resolvConf} changed`);
    if (alive(rootDaemonPid())) found.push('the root daemon runs');
    return found;
  };

  let resolvBefore = Buffer.alloc(0);
  let hostResolvBefore = Buffer.alloc(0);
  let installedChart = false;
  let outsideDns: Background | undefined;
  let clusterIp = '';
  let echoPodIp = '';
  let filePodIp = '';

  // uvu reports nothing when a before hook throws (0 of N run, exit 0): each scenario fails with the error.
  const scenario = afterSetup(test, async () => {
    fs.rmSync(scratch, { recursive: true, force: true });
    fs.mkdirSync(scratch, { recursive: true });
    hostResolvBefore = fs.readFileSync('/etc/resolv.conf');
    await freshNamespace(c, NS);
    await apply(
      c,
      [
        echoDeployment(c),
        echoService(),
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'fileserver', labels: { app: 'fileserver' } },
          spec: {
            terminationGracePeriodSeconds: 2,
            containers: [
              {
                name: 'fileserver',
                image: c.images.shell,
                // The shell image carries Node (as the scenario images of kind/run.sh do).
                command: ['node', '-e', fileServer],
                ports: [{ containerPort: 8080 }],
                readinessProbe: { httpGet: { path: '/', port: 8080 }, periodSeconds: 2 },
              },
            ],
          },
        },
      ],
      NS,
    );
    installedChart = await ensureChart(c, tp);
    await rolloutStatus(c, NS, 'echo');
    await kubectl(c, ['wait', '-n', NS, '--for=condition=Ready', 'pod/fileserver', '--timeout=120s'], {
      timeoutMs: 130_000,
    });
    await waitForEndpoints(c, NS, 'echo', 2);
    clusterIp = (await kubectlJson<{ spec: { clusterIP: string } }>(c, ['get', 'service', 'echo', '-n', NS]))
      .spec.clusterIP;
    echoPodIp = (await listPods(c, NS, 'app=echo')).find((p) => p.ready && !p.deleting)!.ip;
    filePodIp = (await listPods(c, NS, 'app=fileserver'))[0]!.ip;
    // "The workstation's own resolver": a DNS server at 127.0.0.1 in the workstation namespace (its
    // resolv.conf names it) that knows one name outside the cluster.
    if (isolated) {
      outsideDns = startOnWorkstation(c, [
        process.execPath,
        path.join(repoRoot, 'dist', 'testbed', 'zone-server.js'),
        '--listen',
        '127.0.0.1:53',
        '--zone',
        JSON.stringify({ [`${OUTSIDE_NAME}.`]: { A: [OUTSIDE_IP] } }),
      ]);
      await outsideDns.waitForOutput(/listening/);
    }
    resolvBefore = fs.readFileSync(resolvConf);
  });
  /** Scenarios that need a workstation namespace of its own (tp-lab's, tp-kind's): its resolver, its routes. */
  const isolatedScenario = scenarioIf(
    test,
    scenario,
    isolated ? undefined : 'needs a workstation namespace of its own (tp-lab or tp-kind), not this host',
  );

  test.after(async () => {
    await tp(['quit'], { check: false }).catch(() => {});
    const pid = rootDaemonPid();
    if (alive(pid)) process.kill(pid!, 'SIGTERM');
    await outsideDns?.stop();
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
    if (installedChart) await tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    if (process.env.TPV_SHOW_LOG)
      for (const f of ['connector.log', 'daemon.log'])
        if (fs.existsSync(`${scratch}/logs/${f}`))
          process.stdout.write(`--- ${f}\n${fs.readFileSync(`${scratch}/logs/${f}`, 'utf8').slice(-8000)}\n`);
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  scenario('before tp connect: the cluster is out of reach, the outside name resolves', async () => {
    const r = await ws(['curl', '-sS', '--max-time', '3', `http://${clusterIp}/`]);
    assert.is.not(r.code, 0, 'the workstation has no route to the cluster');
    if (isolated)
      assert.match(await wsText(['getent', 'hosts', OUTSIDE_NAME]), new RegExp(`^${OUTSIDE_IP}\\s`));
  });

  scenario('tp connect -n NS with nothing but the kubeconfig brings up the VIF', async () => {
    const r = await tp(['connect', '-n', NS]);
    assert.match(r.stdout, /Connected to the traffic manager/);
    assert.match(r.stdout, /VIF: +tp0 routing /);
    const s = await status();
    assert.is(s.state, 'CONNECTED');
    assert.is(s.namespace, NS);
    assert.ok(s.cluster && s.cluster.podSubnets.length > 0, 'the manager reported the pod subnets');
    assert.is(s.vif?.state, 'UP');
    assert.is(s.vif?.name, 'tp0');
    assert.equal(s.vif?.subnets, [...s.cluster!.podSubnets, ...s.cluster!.serviceSubnets]);
    assert.match(s.vif!.dns, /resolv\.conf: nameserver /);
    assert.ok(s.vif?.rootDaemon.running);
    assert.match(s.vif!.rootDaemon.message, /^connected; /);
    const text = (await tp(['status'])).stdout;
    assert.match(text, /VIF: +tp0 routing/);
    assert.match(text, /root daemon: running/);
    // The manager is reached through the API server, which keeps its own path.
    if (isolated) await routeViaOwnLink();
  });

  scenario('Services and Pods answer by name and by IP', async () => {
    for (const url of [
      'http://echo/',
      `http://echo.${NS}/`,
      `http://echo.${NS}.svc.cluster.local/`,
      `http://${clusterIp}/`,
      `http://${echoPodIp}:8080/`,
    ]) {
      const body = await wsText(['curl', '-sS', '--max-time', '20', url]);
      assert.match(body, /^echo-/, url);
    }
    // Past their SYN, those connections' packets were rewritten in the kernel (docs/vif.md#connections).
    let nat: VifView['kernelNat'] | undefined;
    nat = await waitFor(
      () => `tp status -o json to count packets in vif.kernelNat (it shows ${JSON.stringify(nat)})`,
      async () => {
        nat = (await status()).vif?.kernelNat;
        return nat && nat.packets > 0 ? nat : undefined;
      },
      5_000,
      250,
    );
    assert.ok(nat?.attached && nat.packets > 0, `tp status -o json, vif.kernelNat: ${JSON.stringify(nat)}`);
    assert.match(
      await wsText(['getent', 'hosts', `echo.${NS}`]),
      new RegExp(`^${clusterIp.replace(/\./g, '\\.')}\\s`),
    );
  });

  scenario(
    "the VIF's connections and its gRPC calls go on the root daemon's own port-forward, not through the user daemon",
    async () => {
      const s = await status();
      assert.match(
        s.vif!.rootDaemon.message,
        /TCP flows on its own port-forward to the traffic manager in namespace tp-system, gRPC calls on it too/,
      );
      // What an admin sees: the root daemon holds a connection to the API server itself (its others, to its
      // own forward's listener and the DNS, are on loopback), and none to the user daemon's forward.
      const pid = rootDaemonPid();
      const established = (await wsText(['ss', '-Htnp', 'state', 'established'])).split('\n');
      const ours = established.filter((l) => l.includes(`pid=${pid},`));
      const toApiServer = ours.filter((l) => !/^\S+\s+\S+\s+\S+\s+(127\.|\[::1\]|\[::ffff:127\.)/.test(l));
      assert.ok(
        toApiServer.length > 0,
        `no connection of the root daemon (pid ${pid}) off loopback:\n${established.join('\n')}`,
      );
      const toUserForward = ours.filter((l) => l.split(/\s+/)[3] === s.managerAddress);
      assert.equal(
        toUserForward,
        [],
        `the root daemon's connections to the user daemon's forward ${s.managerAddress}`,
      );
    },
  );

  isolatedScenario(
    'cluster DNS answers as in a pod: no AAAA record is NOERROR, an unknown name NXDOMAIN',
    async () => {
      const dig = (type: string, name: string) => wsText(['dig', '+tries=1', '+time=5', type, name]);
      assert.match(await dig('AAAA', `echo.${NS}.svc.cluster.local`), /status: NOERROR/);
      assert.match(await dig('A', `nothing.${NS}.svc.cluster.local`), /status: NXDOMAIN/);
    },
  );

  scenario('UDP: a datagram exchange with a pod, and DNS straight to the cluster DNS Service', async () => {
    assert.is(await wsText([process.execPath, '-e', udpClient(filePodIp, 5353)]), 'echo:hello');
    if (isolated)
      assert.is(
        await wsText(['dig', '+short', '+tries=1', '+time=5', '@10.96.0.10', `echo.${NS}.svc.cluster.local`]),
        clusterIp,
      );
  });

  isolatedScenario('a name outside the cluster still resolves as before', async () => {
    assert.match(await wsText(['getent', 'hosts', OUTSIDE_NAME]), new RegExp(`^${OUTSIDE_IP}\\s`));
    const missing = await ws(['getent', 'hosts', `nothing.${NS}`]);
    assert.is.not(missing.code, 0, 'an unknown cluster name does not resolve');
  });

  scenario('100 MiB from a cluster pod, byte-exact', async () => {
    const n = 100 * MiB;
    const started = Date.now();
    const out = await wsText(
      ['sh', '-c', `curl -sS --max-time 300 'http://${filePodIp}:8080/bytes?n=${n}' | sha256sum`],
      320_000,
    );
    assert.is(out.split(/\s+/)[0], patternHash(n));
    const s = (Date.now() - started) / 1000;
    process.stdout.write(
      `# 100 MiB from a cluster pod through the VIF: ${s.toFixed(1)} s, ${(100 / s).toFixed(1)} MiB/s\n`,
    );
  });

  scenario('50 sequential requests on one connection to a pod through the VIF all answer', async () => {
    // Behaviour, not speed (bench/round-trip measures the round trip); the time is printed for the record.
    const r = await ws([process.execPath, '-e', sequentialClientSource(`http://${echoPodIp}:8080/`, 50)]);
    checkSequential(r, 50, (b) => b.startsWith('echo-'), 'the VIF');
  });

  scenario('200 concurrent connections to the Service all complete', async () => {
    const r = JSON.parse(await wsText([process.execPath, '-e', concurrentClient(clusterIp, 200)], 120_000));
    assert.equal(r, { ok: 200, failed: 0 });
  });

  scenario(
    'tp loglevel debug --duration 20s: both daemons take it (a refused dial through the VIF is logged), then go back to info by themselves',
    async () => {
      const r = await tp(['loglevel', 'debug', '--duration', '20s']);
      assert.match(
        r.stdout,
        /^Log level debug for 20s \(then info\) on the user daemon and the root daemon$/m,
      );
      assert.match(
        (await tp(['status'])).stdout,
        /daemon: +pid \d+, log \S+ \(level debug until \S+Z, then info\)/,
      );
      const log = (f: string) => fs.readFileSync(`${scratch}/logs/${f}`, 'utf8');
      for (const f of ['connector.log', 'daemon.log'])
        assert.match(log(f), /log level debug for 20 s \(tp loglevel\), then info/, f);
      // Nothing listens on port 1 of the pod: the dial is refused, which the root daemon logs at debug.
      await ws(['curl', '-sS', '--max-time', '5', `http://${echoPodIp}:1/`]);
      await waitFor('the refused dial in the root daemon log', () =>
        /DEBUG.*dial rejected/.test(log('daemon.log')),
      );
      await waitFor(
        'both daemons back at info',
        () => ['connector.log', 'daemon.log'].every((f) => /log level back to info/.test(log(f))),
        60_000,
      );
      assert.match((await tp(['status'])).stdout, /daemon: +pid \d+, log \S+ \(level info\)/);
    },
  );

  scenario('tp quit: no TUN, no routes, the resolver file byte-identical, no root daemon', async () => {
    const pid = rootDaemonPid();
    assert.ok(alive(pid), 'the root daemon ran');
    await tp(['quit']);
    await waitFor('the root daemon to exit', () => !alive(pid), 20_000, 200);
    assert.equal(await leftovers(), []);
    const r = await ws(['curl', '-sS', '--max-time', '3', `http://${clusterIp}/`]);
    assert.is.not(r.code, 0, 'the cluster is out of reach again');
  });

  isolatedScenario(
    '--also-proxy over the API server: it is never routed into the VIF, tp keeps working',
    async () => {
      const r = await tp(['connect', '-n', NS, '--also-proxy', apiNet]);
      assert.match(r.stdout, new RegExp(`VIF: +tp0 routing .*${apiNet.replaceAll('.', '\\.')}`));
      assert.match(
        await wsText(['ip', 'route', 'show', 'table', '7470']),
        new RegExp(`throw ${api!.ip.replaceAll('.', '\\.')}\\b`),
      );
      await routeViaOwnLink();
      assert.match(await wsText(['curl', '-sS', '--max-time', '20', 'http://echo/']), /^echo-/);
      assert.is((await status()).state, 'CONNECTED');
      await tp(['quit']);
      await waitFor('no leftovers', async () => (await leftovers()).length === 0, 20_000, 500);
    },
  );

  scenario('kill -9 of the root daemon: the next tp connect clears the leftovers first', async () => {
    await tp(['connect', '-n', NS]);
    const pid = rootDaemonPid()!;
    process.kill(pid, 'SIGKILL');
    await waitFor('the root daemon to die', () => !alive(pid), 10_000, 100);
    const left = await leftovers();
    assert.ok(left.includes('ip rule 7470') && left.includes(`${resolvConf} changed`), `left: ${left}`);
    assert.is((await status()).vif?.state, 'DOWN', 'tp status says the VIF is down');
    await tp(['connect', '-n', NS]);
    assert.is((await status()).vif?.state, 'UP');
    assert.match(await wsText(['curl', '-sS', '--max-time', '20', 'http://echo/']), /^echo-/);
    await tp(['quit']);
    await waitFor('no leftovers', async () => (await leftovers()).length === 0, 20_000, 500);
  });

  scenario(
    "a kubeconfig user that is an exec plugin: it runs in the user daemon, never in the root daemon, whose own port-forward carries the VIF's connections",
    async () => {
      // The workstation's kubeconfig, its user's certificate handed out by an exec plugin instead (as cloud
      // CLIs do), the plugin noting which process ran it.
      const wsKubeconfig = (await wsText(['sh', '-c', 'echo "$KUBECONFIG"'])) || c.kubeconfig;
      const kc = new KubeConfig();
      kc.loadFromFile(wsKubeconfig.split(':')[0]!);
      const user = kc.getCurrentUser()!;
      const pem = (data?: string, file?: string) =>
        data ? Buffer.from(data, 'base64').toString() : fs.readFileSync(file!, 'utf8');
      const credential = JSON.stringify({
        apiVersion: 'client.authentication.k8s.io/v1',
        kind: 'ExecCredential',
        status: {
          clientCertificateData: pem(user.certData, user.certFile),
          clientKeyData: pem(user.keyData, user.keyFile),
          expirationTimestamp: new Date(Date.now() + 3_600_000).toISOString(),
        },
      });
      const ran = `${scratch}/exec-plugin-ran`;
      fs.rmSync(ran, { force: true });
      fs.writeFileSync(`${scratch}/credential.json`, credential);
      fs.writeFileSync(
        `${scratch}/exec-plugin`,
        `#!/bin/sh\necho "$PPID" >> ${ran}\ncat ${scratch}/credential.json\n`,
        {
          mode: 0o755,
        },
      );
      const cluster = kc.getCurrentCluster()!;
      const file = `${scratch}/exec-kubeconfig.json`;
      fs.writeFileSync(
        file,
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'Config',
          clusters: [
            {
              name: 'c',
              cluster: {
                server: cluster.server,
                'certificate-authority-data':
                  cluster.caData ?? Buffer.from(fs.readFileSync(cluster.caFile!)).toString('base64'),
              },
            },
          ],
          users: [
            {
              name: 'u',
              user: {
                exec: {
                  apiVersion: 'client.authentication.k8s.io/v1',
                  command: `${scratch}/exec-plugin`,
                  interactiveMode: 'Never',
                },
              },
            },
          ],
          contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
          'current-context': 'x',
        }),
      );
      await tp(['connect', '-n', NS, '--kubeconfig', file]);
      try {
        const s = await status();
        assert.match(s.vif!.rootDaemon.message, /TCP flows on its own port-forward to the traffic manager/);
        assert.match(
          await wsText(['curl', '-sS', '--max-time', '20', `http://${echoPodIp}:8080/`]),
          /^echo-/,
        );
        const runners = new Set(fs.readFileSync(ran, 'utf8').trim().split('\n').map(Number));
        assert.equal(
          [...runners],
          [s.daemon.pid],
          `the plugin ran in ${[...runners]}, the user daemon is ${s.daemon.pid}, the root daemon ${rootDaemonPid()}`,
        );
      } finally {
        await tp(['quit']);
        await waitFor('no leftovers', async () => (await leftovers()).length === 0, 20_000, 500);
      }
    },
  );

  scenario("the host's /etc/resolv.conf is byte-identical", async () => {
    assert.ok(fs.readFileSync('/etc/resolv.conf').equals(hostResolvBefore));
  });
}

test.run();
