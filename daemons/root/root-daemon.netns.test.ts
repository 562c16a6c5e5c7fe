// The root daemon for real: a TUN in a "workstation" network namespace reaching a "cluster" namespace
// through the system stack and the real standalone traffic manager, tp's DNS in front of the namespace's
// resolv.conf, and everything put back on quit and after kill -9. See testbed/netns-topology.ts for the map.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import type { DaemonStatus } from '../../rpc/gen/connector.js';
import type { ClusterInfo } from '../../rpc/gen/manager.js';
import {
  ADDR,
  DIST,
  MANAGER_PORT,
  NetnsLab,
  NS,
  ORIGINAL_RESOLV_CONF,
  POD_SUBNET,
  POD_SUBNET6,
  RESOLV_CONF,
  SERVICE_SUBNET,
} from '../../testbed/netns-topology.js';
import {
  connectRootDaemon,
  type RootDaemonHandle,
  rootDaemonStatus,
  startRootDaemon,
  stopRootDaemon,
} from './launch.js';
import { payloadSha256 } from './test/payload.js';

const lab = new NetnsLab();
/** The standalone manager's Prometheus metrics, in the cluster namespace. */
const METRICS_PORT = 18_701;
const socketPath = path.join(lab.tmp, 'root-daemon.socket');
const stateDir = path.join(lab.tmp, 'state');
const logDir = path.join(lab.tmp, 'logs');
let sessionId = '';
let daemon: RootDaemonHandle | undefined;

const cluster: ClusterInfo = {
  podSubnets: [POD_SUBNET, POD_SUBNET6],
  serviceSubnets: [SERVICE_SUBNET],
  clusterDomain: 'cluster.local',
  dnsIps: [ADDR.clusterDns],
  managerPodIp: ADDR.manager,
  managedNamespaces: ['default'],
  // What the standalone manager says (WatchClusterInfo): its port takes flow connections.
  flowConnections: true,
  flowWindows: true,
};

async function start(): Promise<RootDaemonHandle> {
  const d = await startRootDaemon({
    socketPath,
    stateDir,
    logDir,
    wrap: ['ip', 'netns', 'exec', NS.ws],
    extraArgs: ['--dns-mode', 'resolv.conf', '--log-level', 'debug'],
  });
  lab.track(d.pid);
  return d;
}

function connect(d: RootDaemonHandle, over: Partial<Parameters<typeof connectRootDaemon>[1]> = {}) {
  return connectRootDaemon(d.client, {
    managerAddress: `${ADDR.manager}:${MANAGER_PORT}`,
    sessionId,
    namespace: 'default',
    cluster,
    ...over,
  });
}

async function ws(...argv: string[]) {
  return lab.exec(NS.ws, argv, 180_000);
}

async function wsText(...argv: string[]): Promise<string> {
  const r = await ws(...argv);
  assert.is(r.code, 0, `${argv.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

/** The VIF's interface index: the same one means the VIF was kept, not made anew. */
async function vifIndex(): Promise<string | undefined> {
  return /^(\d+):/.exec(await wsText('ip', '-o', 'link', 'show', 'dev', 'tp0'))?.[1];
}

/**
 * A connection through the VIF to the echo Service that has had its first answer; `again(why)` sends its
 * second request and asserts it was answered on the same connection.
 */
async function heldConnection(): Promise<{ again(why: string): Promise<void> }> {
  const held = lab.node(NS.ws, 'daemons/root/test/clients.js', ['held', ADDR.service, '80']);
  const first = JSON.parse((await lab.waitForLine(held, /(\{"first".*\})\n/))[1]!) as { first: string };
  assert.is(first.first.trim(), 'hello from the pod');
  return {
    again: async (why) => {
      const answered = lab.waitForLine(held, /(\{"(?:second|error)".*\})\n/);
      held.kill('SIGUSR2');
      const after = JSON.parse((await answered)[1]!) as { second?: string; error?: string; sockets: number };
      assert.equal(
        { ...after, second: after.second?.trim() },
        { second: 'hello from the pod', sockets: 1 },
        why,
      );
    },
  };
}

/** What tp may leave in the workstation namespace: must be nothing after quit or a refused connect. */
async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  if ((await ws('ip', 'link', 'show', 'dev', 'tp0')).code === 0) found.push('tp0 exists');
  if ((await wsText('ip', 'rule', 'show')).includes('7470')) found.push('ip rule 7470');
  if ((await wsText('ip', '-6', 'rule', 'show')).includes('7470')) found.push('ip -6 rule 7470');
  if ((await wsText('ip', 'route', 'show', 'table', 'all')).includes('table 7470'))
    found.push('routes in table 7470');
  if ((await wsText('ip', '-6', 'route', 'show', 'table', 'all')).includes('table 7470'))
    found.push('v6 routes in table 7470');
  if (fs.readFileSync(RESOLV_CONF, 'utf8') !== ORIGINAL_RESOLV_CONF) found.push('resolv.conf changed');
  return found;
}

test.before(async () => {
  await lab.up();
  await lab.startClusterServers();
  lab.node(NS.cl, 'manager/main.js', [
    '--standalone',
    '--listen',
    `${ADDR.manager}:${MANAGER_PORT}`,
    '--metrics-listen',
    `${ADDR.manager}:${METRICS_PORT}`,
  ]);
  const keeper = lab.node(NS.ws, 'daemons/root/test/session-keeper.js', [`${ADDR.manager}:${MANAGER_PORT}`]);
  sessionId = (await lab.waitForLine(keeper, /session (\S+)/))[1]!;
});

test.after(async () => {
  try {
    await stopRootDaemon(socketPath);
  } finally {
    daemon?.close();
    const log = path.join(logDir, 'daemon.log');
    if (process.env.TPV_SHOW_LOG && fs.existsSync(log)) process.stdout.write(fs.readFileSync(log, 'utf8'));
    await lab.down();
  }
});

test('connect brings up the VIF, the routes and the DNS; the manager keeps its own path', async () => {
  daemon = await start();
  const status = await connect(daemon);
  assert.is(status.vifName, 'tp0');
  assert.equal(status.subnets, [POD_SUBNET, POD_SUBNET6, SERVICE_SUBNET]);
  assert.match(status.dns, RESOLV_CONF.replace(`/etc/netns/${NS.ws}`, '/etc'));
  const routes = await wsText('ip', 'route', 'show', 'table', '7470');
  assert.match(routes, '10.244.0.0/16 dev tp0');
  assert.match(routes, '10.96.0.0/12 dev tp0');
  assert.match(routes, `throw ${ADDR.manager}`);
  assert.match(await wsText('ip', 'route', 'get', ADDR.manager), 'dev tpv-ws0');
  assert.match(await wsText('ip', 'route', 'get', ADDR.pod), 'dev tp0');
  assert.match(await wsText('ip', 'link', 'show', 'dev', 'tp0'), 'mtu 65000');
  assert.match(await wsText('ip', '-6', 'route', 'show', 'table', '7470'), 'fd10:244::/48 dev tp0');
  assert.match(await wsText('ip', '-6', 'route', 'get', ADDR.pod6), 'dev tp0');
  const resolv = fs.readFileSync(RESOLV_CONF, 'utf8');
  assert.match(resolv, /^# Generated by tp/);
  assert.match(resolv, /search example/);
});

test('cluster services and pods answer by name and IP; other names resolve as before', async () => {
  for (const url of [
    'http://echo/',
    'http://echo.default/',
    'http://echo.default.svc.cluster.local/',
    `http://${ADDR.service}/`,
    `http://${ADDR.pod}/`,
    `http://[${ADDR.pod6}]/`,
  ]) {
    assert.is(await wsText('curl', '-sS', '--max-time', '20', url), 'hello from the pod', url);
  }
  assert.match(
    await wsText('getent', 'hosts', 'echo.default'),
    new RegExp(`^${ADDR.service.replace(/\./g, '\\.')}\\s`),
  );
  assert.match(await wsText('getent', 'hosts', 'outside.example'), /^192\.0\.2\.7\s/);
  assert.is(await wsText('dig', '+short', '+tries=1', 'echo.default.svc.cluster.local'), ADDR.service);
  assert.is(await wsText('dig', '+short', '+tcp', '+tries=1', 'outside.example'), '192.0.2.7');
  const missing = await ws('getent', 'hosts', 'nothing.default');
  assert.is.not(missing.code, 0, 'an unknown cluster name does not resolve');
});

test('a new session of the same user daemon (it arrived again) is followed in place: the VIF, its DNS and a connection through it stay', async () => {
  const keeper = lab.node(NS.ws, 'daemons/root/test/session-keeper.js', [`${ADDR.manager}:${MANAGER_PORT}`]);
  const second = (await lab.waitForLine(keeper, /session (\S+)/))[1]!;
  assert.is.not(second, sessionId);
  const before = await vifIndex();
  const resolv = fs.readFileSync(RESOLV_CONF, 'utf8');
  const held = await heldConnection();
  const status = await connect(daemon!, { sessionId: second });
  assert.is(status.vifName, 'tp0');
  assert.is(await vifIndex(), before, 'the same interface, not a new one');
  assert.is(fs.readFileSync(RESOLV_CONF, 'utf8'), resolv, 'resolv.conf untouched');
  await held.again('the connection opened before the change carried a request after it');
  assert.is(await wsText('curl', '-sS', '--max-time', '20', 'http://echo.default/'), 'hello from the pod');
  assert.match(
    fs.readFileSync(path.join(logDir, 'daemon.log'), 'utf8'),
    `following a new session: the VIF stays session=${second}`,
  );
  sessionId = second;
});

test('100 MiB from a pod arrive byte for byte', async () => {
  const n = 100 * 1024 * 1024;
  const sum = await wsText('sh', '-c', `curl -sS --max-time 170 http://${ADDR.pod}/bytes?n=${n} | sha256sum`);
  assert.is(sum.split(/\s/)[0], payloadSha256(n));
});

test("past their SYN, the flows' packets are rewritten in the kernel (tp_vif on the VIF's egress), IPv4 and IPv6, byte for byte", async () => {
  // The packet worker's counters reach the status every 2 s. One read, no wait and no assertion, so
  // that both waits below retry only "not there yet" and an assertion fails at once.
  let m = '';
  const read = async () => {
    const status = await rootDaemonStatus(daemon!.client);
    m = status.message;
    const n = /kernel NAT: (\d+) packets rewritten in the kernel/.exec(m)?.[1];
    return n === undefined ? undefined : { status, n: Number(n) };
  };
  // tp status -o json has the same, structured.
  const structured = ({ status, n }: { status: DaemonStatus; n: number }) => {
    assert.ok(status.kernelNat?.attached, 'attached in the structured status');
    assert.is(status.kernelNat.packets, n);
    return n;
  };
  const n = 16 * 1024 * 1024;
  for (const host of [ADDR.pod, `[${ADDR.pod6}]`]) {
    const before = structured(
      await waitFor(() => `the status to say the kernel NAT is attached (it says: ${m})`, read, 6_000, 200),
    );
    const sum = await wsText('sh', '-c', `curl -sS --max-time 60 'http://${host}/bytes?n=${n}' | sha256sum`);
    assert.is(sum.split(/\s/)[0], payloadSha256(n), host);
    const after = structured(
      await waitFor(
        () =>
          `${host}: the count of packets rewritten in the kernel to move from ${before} (the status says: ${m})`,
        async () => {
          const now = await read();
          return now && now.n !== before ? now : undefined;
        },
        6_000,
        200,
      ),
    );
    assert.ok(after > before + 100, `${host}: ${after - before} packets rewritten in the kernel`);
  }
});

test('200 concurrent connections all complete', async () => {
  const r = JSON.parse(
    await wsText(process.execPath, clientsJs(), 'concurrent', '200', ADDR.service, '80', '65536'),
  ) as { ok: number; failed: number };
  assert.equal(r, { ok: 200, failed: 0 });
});

test("the VIF's TCP flows ride flow connections to the manager's port, each carrying one flow after another", async () => {
  const metrics = await wsText(
    'curl',
    '-sS',
    '--max-time',
    '5',
    `http://${ADDR.manager}:${METRICS_PORT}/metrics`,
  );
  const sample = (name: string) =>
    Number(metrics.match(new RegExp(`^${name} (\\d+)$`, 'm'))?.[1] ?? Number.NaN);
  const connections = sample('tp_tunnel_flow_connections_total');
  const flows = sample('tp_tunnel_flows_total\\{kind="outbound_tcp"\\}');
  assert.ok(connections >= 1, `flow connections: ${connections}`);
  // The tests before opened 200 at once and a few dozen one after another: those reused connections.
  assert.ok(flows > connections, `${flows} TCP flows on ${connections} flow connections`);
});

test("with the user's cluster access the TCP flows take the root daemon's own port-forward; one that cannot be opened sends them to the manager's address", async () => {
  // An API server that is not there: the manager's pod cannot be looked up, no port-forward opens.
  const clusterAccess = {
    kubeconfig: JSON.stringify({ server: 'https://127.0.0.1:1' }),
    managerNamespace: 'tp-system',
  };
  const own = await connect(daemon!, { clusterAccess });
  assert.match(
    own.message,
    /TCP flows on its own port-forward to the traffic manager in namespace tp-system\)/,
    'the gRPC calls are not on it',
  );
  // The gRPC channel did not come up on the daemon's own port-forward: it went to the manager's address,
  // and the listener it would have used is closed (only the DNS server's remain).
  assert.match(
    fs.readFileSync(path.join(logDir, 'daemon.log'), 'utf8'),
    /the gRPC channel on this daemon's own port-forward does not come up: it goes to the manager's address/,
  );
  const listening = await wsText('ss', '-Htlnp');
  const ours = listening
    .split('\n')
    .filter((l) => l.includes(`pid=${daemon!.pid},`) && /\s127\.0\.0\.1:/.test(l));
  assert.equal(ours, [], "the daemon's loopback TCP listeners");
  assert.is(await wsText('curl', '-sS', '--max-time', '20', 'http://echo.default/'), 'hello from the pod');
  assert.match(
    fs.readFileSync(path.join(logDir, 'daemon.log'), 'utf8'),
    /the flow goes as a Tunnel call.*no flow connection: cannot read Service tp-system\/traffic-manager: connect ECONNREFUSED 127\.0\.0\.1:1/,
  );
  // A renewed credential (the user daemon sends it when it changed) is taken in place: the same VIF.
  const before = await vifIndex();
  const renewed = { ...clusterAccess, kubeconfig: JSON.stringify({ server: 'https://127.0.0.1:2' }) };
  assert.match((await connect(daemon!, { clusterAccess: renewed })).message, /its own port-forward/);
  assert.is(await vifIndex(), before, 'the same interface, not a new one');
  assert.match(
    fs.readFileSync(path.join(logDir, 'daemon.log'), 'utf8'),
    'the cluster credential was renewed',
  );
  assert.is(await wsText('curl', '-sS', '--max-time', '20', 'http://echo.default/'), 'hello from the pod');
  assert.match(
    fs.readFileSync(path.join(logDir, 'daemon.log'), 'utf8'),
    /no flow connection: cannot read Service tp-system\/traffic-manager: connect ECONNREFUSED 127\.0\.0\.1:2/,
  );
  // Connected again without it: connections to the manager's address, as before.
  const back = await connect(daemon!);
  assert.match(back.message, new RegExp(`TCP flows on connections to ${ADDR.manager}:${MANAGER_PORT}`));
  assert.is(await wsText('curl', '-sS', '--max-time', '20', 'http://echo.default/'), 'hello from the pod');
});

test("a new user daemon taking over a dead one's VIF is followed in place when the flows take the root daemon's own port-forward: the same VIF, a connection through it stays, calls go to the new daemon's forward", async () => {
  // Each user daemon's forward to the manager: a relay on loopback of its own.
  const relay = async (port: number) => {
    const src = `const net=require('node:net');net.createServer((c)=>{const u=net.connect(${MANAGER_PORT},'${ADDR.manager}');c.pipe(u).pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy())}).listen(${port},'127.0.0.1',()=>console.log('listening'))`;
    const p = lab.spawnIn(NS.ws, [process.execPath, '-e', src]);
    await lab.waitForLine(p, /listening/);
    return p;
  };
  const [forwardA, forwardB] = [await relay(18_711), await relay(18_712)];
  const [ownerA, ownerB] = [lab.spawnIn(NS.ws, ['sleep', '600']), lab.spawnIn(NS.ws, ['sleep', '600'])];
  // An API server that is not there: the flows go as Tunnel calls on the gRPC channel to the forward,
  // which reaches the manager's address directly here (keepOut: as a user daemon keeps the API server's).
  const keepOut = [ADDR.manager];
  const clusterAccess = {
    kubeconfig: JSON.stringify({ server: 'https://127.0.0.1:1' }),
    managerNamespace: 'tp-system',
  };
  try {
    await connect(daemon!, {
      managerAddress: '127.0.0.1:18711',
      clusterAccess,
      keepOut,
      ownerPid: ownerA.pid!,
    });
    const before = await vifIndex();
    const held = await heldConnection();
    // The user daemon is killed; `tp connect` starts another, with a session and a forward of its own.
    await lab.stop(ownerA, 'SIGKILL');
    const keeper = lab.node(NS.ws, 'daemons/root/test/session-keeper.js', [
      `${ADDR.manager}:${MANAGER_PORT}`,
    ]);
    const second = (await lab.waitForLine(keeper, /session (\S+)/))[1]!;
    const status = await connect(daemon!, {
      managerAddress: '127.0.0.1:18712',
      sessionId: second,
      clusterAccess,
      keepOut,
      ownerPid: ownerB.pid!,
    });
    assert.match(status.message, /its own port-forward/);
    assert.is(await vifIndex(), before, 'the same interface, not a new one');
    await held.again('the connection opened before the takeover carried a request after it');
    // The dead daemon's forward is gone: names and new connections go to the new one.
    await lab.stop(forwardA, 'SIGKILL');
    assert.is(await wsText('curl', '-sS', '--max-time', '20', 'http://echo.default/'), 'hello from the pod');
    const log = fs.readFileSync(path.join(logDir, 'daemon.log'), 'utf8');
    assert.match(log, `a new user daemon took the VIF over: the VIF stays pid=${ownerB.pid}`);
    assert.match(log, "the traffic manager's address changed address=127.0.0.1:18712");
    // Another user daemon while this one lives is refused, as before.
    await connect(daemon!, {
      managerAddress: '127.0.0.1:18712',
      sessionId: second,
      clusterAccess,
      ownerPid: 1,
    }).then(
      () => assert.unreachable('a second live user daemon took the VIF'),
      (e: Error) =>
        assert.match(
          e.message,
          `the VIF is in use by another tp session (its user daemon is pid ${ownerB.pid})`,
        ),
    );
  } finally {
    await lab.stop(ownerB, 'SIGKILL');
    await lab.stop(ownerA, 'SIGKILL');
    await lab.stop(forwardA, 'SIGKILL');
    await lab.stop(forwardB, 'SIGKILL');
    // Back to the manager's address, without an owner (the tests after this one; a dead owner's VIF
    // would be put back after its grace).
    await connect(daemon!);
  }
  assert.is(await wsText('curl', '-sS', '--max-time', '20', 'http://echo.default/'), 'hello from the pod');
});

test('a refused destination is a refused connection, at once', async () => {
  const r = JSON.parse(await wsText(process.execPath, clientsJs(), 'refused', ADDR.pod, '81')) as {
    code?: string;
  };
  assert.is(r.code, 'ECONNREFUSED');
  const curl = await ws('curl', '-sS', '--connect-timeout', '10', `http://${ADDR.pod}:81/`);
  assert.is(curl.code, 7, `curl: ${curl.stderr}`);
  assert.match(curl.stderr, /Failed to connect/);
});

test('a UDP exchange with a pod', async () => {
  const r = JSON.parse(await wsText(process.execPath, clientsJs(), 'udp', ADDR.pod, '5353', 'hello')) as {
    answer?: string;
    error?: string;
  };
  assert.equal(
    r,
    { answer: 'echo:hello' },
    'a UDP flow needs the manager to hand protocol-17 OPENs to serveUdp (tunnel/udp-flow.ts) instead of dialing TCP',
  );
});

test('ping to a cluster address is answered', async () => {
  const out = await wsText('ping', '-c', '2', '-W', '3', ADDR.service);
  assert.match(out, /2 received/);
});

test('status shows the VIF, its subnets, the DNS configuration and the health', async () => {
  const s = await rootDaemonStatus(daemon!.client);
  assert.ok(s.running);
  assert.is(s.vifName, 'tp0');
  assert.equal(s.subnets, [POD_SUBNET, POD_SUBNET6, SERVICE_SUBNET]);
  assert.match(s.dns, 'nameserver 198.18.0.1');
  assert.match(s.message, /^connected; /);
});

test('quit removes the TUN, its routes and the DNS configuration; resolv.conf is byte-identical', async () => {
  await stopRootDaemon(socketPath);
  daemon?.close();
  daemon = undefined;
  assert.equal(await leftovers(), []);
  assert.not.ok(fs.existsSync(socketPath));
});

test('after kill -9 the next start clears the leftovers first', async () => {
  const d = await start();
  await connect(d);
  assert.is.not(fs.readFileSync(RESOLV_CONF, 'utf8'), ORIGINAL_RESOLV_CONF);
  process.kill(d.pid!, 'SIGKILL');
  d.close();
  await new Promise((r) => setTimeout(r, 500));
  const left = await leftovers();
  assert.ok(left.includes('ip rule 7470') && left.includes('resolv.conf changed'), `left behind: ${left}`);
  daemon = await start();
  assert.equal(await leftovers(), [], 'cleared at start, before any connect');
});

test('TP_VIF_KERNEL_NAT=0: the root daemon starts with --kernel-nat off, the packet worker rewrites every packet, and the status says so', async () => {
  await stopRootDaemon(socketPath);
  daemon?.close();
  daemon = undefined;
  process.env.TP_VIF_KERNEL_NAT = '0';
  try {
    daemon = await start();
  } finally {
    delete process.env.TP_VIF_KERNEL_NAT;
  }
  await connect(daemon);
  const n = 4 * 1024 * 1024;
  const sum = await wsText(
    'sh',
    '-c',
    `curl -sS --max-time 60 'http://${ADDR.pod}/bytes?n=${n}' | sha256sum`,
  );
  assert.is(sum.split(/\s/)[0], payloadSha256(n));
  const off = await rootDaemonStatus(daemon.client);
  assert.match(off.message, 'kernel NAT off (turned off (the root daemon runs with --kernel-nat off))');
  assert.equal(
    [off.kernelNat?.attached, off.kernelNat?.offReason],
    [false, 'turned off (the root daemon runs with --kernel-nat off)'],
  );
  await stopRootDaemon(socketPath);
  daemon.close();
  daemon = undefined;
  assert.equal(await leftovers(), []);
});

test('bad input is refused with a clear message and leaves nothing behind', async () => {
  daemon ??= await start();
  const conflicting = connect(daemon, { cluster: { ...cluster, podSubnets: ['10.210.0.0/16'] } });
  await rejects(
    conflicting,
    /pod subnet 10\.210\.0\.0\/16 overlaps the route 10\.210\.0\.0\/24 dev tpv-ws0.*--allow-conflicting-subnets/,
  );
  assert.equal(await leftovers(), []);
  await rejects(
    connect(daemon, { neverProxy: ['10.0.0.0/33'] }),
    /invalid --never-proxy CIDR "10\.0\.0\.0\/33"/,
  );
  assert.equal(await leftovers(), []);
  await rejects(
    connect(daemon, { clusterAccess: { kubeconfig: '{"server":', managerNamespace: 'tp-system' } }),
    /Connect's cluster access cannot be used: the cluster access is not JSON/,
  );
  assert.equal(await leftovers(), []);
  // --allow-conflicting-subnets proceeds.
  const allowed = await connect(daemon, {
    cluster: { ...cluster, podSubnets: ['10.210.0.0/16'] },
    allowConflictingSubnets: true,
    neverProxy: [`${ADDR.ws}/32`, `${ADDR.clusterGateway}/32`],
  });
  assert.match(allowed.message, /conflicts allowed/);
  await stopRootDaemon(socketPath);
  daemon.close();
  daemon = undefined;
  assert.equal(await leftovers(), []);
});

test('no /dev/net/tun, not root, no sudo: a clear error each, nothing behind', async () => {
  // A mount namespace where /dev/net is empty: the tun module "is not loaded".
  const noTunSocket = path.join(lab.tmp, 'no-tun.socket');
  const p = lab.spawnIn(NS.ws, [
    'unshare',
    '-m',
    'sh',
    '-c',
    `mount -t tmpfs tmpfs /dev/net && exec ${process.execPath} ${path.join(distRoot(), 'daemons/root/main.js')} --socket ${noTunSocket} --state-dir ${stateDir} --log-dir ${logDir} --dns-mode resolv.conf`,
  ]);
  const d = await waitForSocket(noTunSocket);
  try {
    await rejects(
      connectRootDaemon(d.client, { managerAddress: `${ADDR.manager}:${MANAGER_PORT}`, sessionId, cluster }),
      /\/dev\/net\/tun does not exist: load the tun kernel module \(modprobe tun\)/,
    );
    assert.equal(await leftovers(), []);
  } finally {
    d.close();
    await stopRootDaemon(noTunSocket);
    await lab.stop(p);
  }
  const nobody = await lab.exec(NS.ws, [
    'setpriv',
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    process.execPath,
    path.join(distRoot(), 'daemons/root/main.js'),
    '--socket',
    path.join(lab.tmp, 'nobody.socket'),
  ]);
  assert.is(nobody.code, 1);
  assert.match(nobody.stderr, /must run as root/);
  // tp connect as a user: launch.ts needs sudo (absent here, or asking for a password without a terminal).
  const userDir = path.join(lab.tmp, 'user');
  fs.mkdirSync(userDir, { mode: 0o777 });
  fs.chmodSync(userDir, 0o777);
  const script = `import(${JSON.stringify(path.join(distRoot(), 'daemons/root/launch.js'))}).then((m) => m.startRootDaemon({ socketPath: ${JSON.stringify(path.join(userDir, 's'))}, logDir: ${JSON.stringify(userDir)} })).then(() => process.exit(0), (e) => { console.error(e.message); process.exit(1); })`;
  const user = await lab.exec(NS.ws, [
    'setpriv',
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    process.execPath,
    '-e',
    script,
  ]);
  assert.is(user.code, 1);
  assert.match(
    user.stderr,
    /needs root for its network interface.*(sudo is not installed|sudo asks for a password)/,
  );
  assert.equal(await leftovers(), []);
});

async function rejects(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.match((e as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected a rejection matching ${pattern}`);
}

function distRoot(): string {
  return DIST;
}

function clientsJs(): string {
  return path.join(distRoot(), 'daemons/root/test/clients.js');
}

async function waitForSocket(socket: string) {
  const { rootDaemonClient } = await import('./launch.js');
  const deadline = Date.now() + 15_000;
  for (;;) {
    const client = rootDaemonClient(socket);
    try {
      await rootDaemonStatus(client);
      return { client, close: () => client.close() };
    } catch {
      client.close();
      if (Date.now() > deadline) throw new Error(`no daemon on ${socket}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

test.run();
