// `tp connect` brings up the VIF through the user daemon, for real: the CLI in a workstation namespace,
// the user daemon it launches, the root daemon the user daemon starts (as root), the real standalone traffic
// manager in a cluster namespace (testbed/netns-topology.ts draws the map). A standalone manager
// reports no subnets, so --also-proxy names them here; Kubernetes mode is covered by test/e2e/vif.test.ts.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { StatusView } from '../../cli/output.js';
import { waitFor } from '../../command/wait.js';
import {
  ADDR,
  DIST,
  MANAGER_PORT,
  NetnsLab,
  NS,
  ORIGINAL_RESOLV_CONF,
  POD_SUBNET,
  RESOLV_CONF,
  SERVICE_SUBNET,
} from '../../testbed/netns-topology.js';

const lab = new NetnsLab();
const rootSocket = path.join(lab.tmp, 'root.socket');
const stateDir = path.join(lab.tmp, 'root-state');
const manager = `${ADDR.manager}:${MANAGER_PORT}`;

/** `tp status -o json` of a connected workstation. */
type StatusJson = Extract<StatusView, { sessionId: string }>;

/** `tp ARGS` in the workstation namespace as user `who` (each has its own run directory). */
function tp(who: string, ...args: string[]) {
  const dir = path.join(lab.tmp, who);
  return lab.exec(
    NS.ws,
    [
      'env',
      `TP_RUN_DIR=${dir}`,
      `TP_LOG_DIR=${dir}/logs`,
      `TP_ROOT_DAEMON_SOCKET=${rootSocket}`,
      `TP_ROOT_DAEMON_STATE_DIR=${stateDir}`,
      process.execPath,
      path.join(DIST, 'cli/main.js'),
      ...args,
    ],
    120_000,
  );
}

async function status(who: string): Promise<StatusJson> {
  const r = await tp(who, 'status', '-o', 'json');
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as StatusJson;
}

async function wsText(...argv: string[]): Promise<string> {
  const r = await lab.exec(NS.ws, argv, 60_000);
  assert.is(r.code, 0, `${argv.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

/** The root daemon's pid, from the record it keeps in its state directory. */
function rootDaemonPid(): number | undefined {
  try {
    return (JSON.parse(fs.readFileSync(path.join(stateDir, 'root-daemon.json'), 'utf8')) as { pid: number })
      .pid;
  } catch {
    return undefined;
  }
}

function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return !/^\S+ \S+ Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/\(.*\)/, 'x'));
  } catch {
    return false;
  }
}

const until = (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000) =>
  waitFor(what, check, timeoutMs, 200);

/** What tp may leave in the workstation: nothing, after quit or a refused connect. */
async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  if ((await lab.exec(NS.ws, ['ip', 'link', 'show', 'dev', 'tp0'])).code === 0) found.push('tp0 exists');
  if ((await wsText('ip', 'rule', 'show')).includes('7470')) found.push('ip rule 7470');
  if ((await wsText('ip', 'route', 'show', 'table', 'all')).includes('table 7470')) found.push('table 7470');
  if (fs.readFileSync(RESOLV_CONF, 'utf8') !== ORIGINAL_RESOLV_CONF) found.push('resolv.conf changed');
  if (alive(rootDaemonPid())) found.push('the root daemon runs');
  return found;
}

test.before(async () => {
  await lab.up();
  await lab.startClusterServers();
  // The manager's resolv.conf (/etc/netns/tpv-cl) names the cluster's DNS: LookupDNS asks it.
  lab.node(NS.cl, 'manager/main.js', ['--standalone', '--listen', manager]);
  const probe = `require('net').connect(${MANAGER_PORT}, '${ADDR.manager}').on('connect', () => process.exit(0)).on('error', () => process.exit(1))`;
  await until(
    'the traffic manager to listen',
    async () => (await lab.exec(NS.ws, [process.execPath, '-e', probe])).code === 0,
  );
});

test.after(async () => {
  for (const who of ['alice', 'bob']) await tp(who, 'quit').catch(() => undefined);
  lab.track(rootDaemonPid());
  await lab.down();
});

test('a standalone manager reports no subnets: connect starts no root daemon and says why', async () => {
  const r = await tp('alice', 'connect', '--manager-address', manager);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /VIF: +none: the traffic manager reports no cluster subnets/);
  assert.not.ok(fs.existsSync(rootSocket), 'no root daemon');
  const s = await status('alice');
  assert.is(s.vif?.state, 'DOWN');
  assert.equal(await leftovers(), []);
  assert.is((await tp('alice', 'quit')).code, 0);
});

test('tp connect --also-proxy: the VIF comes up; pods and services answer by IP and by name', async () => {
  const r = await tp(
    'alice',
    'connect',
    '--manager-address',
    manager,
    '-n',
    'default',
    '--also-proxy',
    `${POD_SUBNET},${SERVICE_SUBNET}`,
  );
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /VIF: +tp0 routing 10\.244\.0\.0\/16, 10\.96\.0\.0\/12/);
  lab.track(rootDaemonPid());
  const s = await status('alice');
  assert.is(s.state, 'CONNECTED');
  assert.is(s.namespace, 'default');
  assert.is(s.vif?.state, 'UP');
  assert.is(s.vif?.name, 'tp0');
  assert.equal(s.vif?.subnets, [POD_SUBNET, SERVICE_SUBNET]);
  assert.match(s.vif!.dns, /nameserver 198\.18\.0\.1/);
  assert.ok(s.vif?.rootDaemon.running);
  assert.match(s.vif!.rootDaemon.message, /^connected; /);
  assert.match(await wsText('ip', 'route', 'show', 'table', '7470'), `throw ${ADDR.manager}`);
  for (const url of [
    `http://${ADDR.pod}/`,
    `http://${ADDR.service}/`,
    'http://echo/',
    'http://echo.default/',
  ])
    assert.is(await wsText('curl', '-sS', '--max-time', '20', url), 'hello from the pod', url);
  // The standalone manager asks its own resolver (the cluster's DNS) with a real query.
  assert.match(await wsText('getent', 'hosts', 'echo.default'), /^10\.96\.0\.10\s/);
  assert.match(await wsText('getent', 'ahosts', 'echo'), /^10\.96\.0\.10\s/);
  assert.match(await wsText('getent', 'hosts', 'outside.example'), /^192\.0\.2\.7\s/);
  const udp = JSON.parse(
    await wsText(
      process.execPath,
      path.join(DIST, 'daemons/root/test/clients.js'),
      'udp',
      ADDR.pod,
      '5353',
      'hi',
    ),
  ) as { answer?: string };
  assert.equal(udp, { answer: 'echo:hi' });
  // A second connect with the same flags changes nothing.
  const again = await tp(
    'alice',
    'connect',
    '--manager-address',
    manager,
    '--also-proxy',
    `${POD_SUBNET},${SERVICE_SUBNET}`,
  );
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /^Already connected/);
});

test('another tp session cannot take the VIF over: a clear error, the first VIF untouched', async () => {
  const r = await tp('bob', 'connect', '--manager-address', manager, '--also-proxy', POD_SUBNET);
  assert.is(r.code, 1);
  assert.match(r.stderr, /the VIF is in use by another tp session \(its user daemon is pid \d+\).*--no-vif/);
  assert.is((await status('bob')).state, 'NOT_RUNNING', 'the user daemon it started is gone again');
  assert.is(await wsText('curl', '-sS', '--max-time', '20', `http://${ADDR.pod}/`), 'hello from the pod');
  const withoutVif = await tp('bob', 'connect', '--manager-address', manager, '--no-vif');
  assert.is(withoutVif.code, 0, withoutVif.stderr);
  assert.match(withoutVif.stdout, /VIF: +off \(tp connect --no-vif\)/);
  assert.is((await tp('bob', 'quit')).code, 0);
  assert.is((await status('alice')).vif?.state, 'UP', "bob's quit leaves alice's VIF alone");
});

test('tp quit: no TUN, no routes, resolv.conf byte-identical, no root daemon', async () => {
  const pid = rootDaemonPid();
  assert.ok(alive(pid));
  const r = await tp('alice', 'quit');
  assert.is(r.code, 0, r.stderr);
  await until('the root daemon to exit', () => !alive(pid));
  assert.equal(await leftovers(), []);
});

test('the user daemon killed: the root daemon puts everything back by itself and exits', async () => {
  const r = await tp('alice', 'connect', '--manager-address', manager, '--also-proxy', POD_SUBNET);
  assert.is(r.code, 0, r.stderr);
  const root = rootDaemonPid();
  lab.track(root);
  const { daemon } = await status('alice');
  process.kill(daemon.pid, 'SIGKILL');
  await until('the root daemon to exit', () => !alive(root));
  assert.equal(await leftovers(), []);
});

test('kill -9 of the root daemon: the VIF is reported down; the next tp connect clears the leftovers', async () => {
  const r = await tp('alice', 'connect', '--manager-address', manager, '--also-proxy', POD_SUBNET);
  assert.is(r.code, 0, r.stderr);
  const root = rootDaemonPid()!;
  process.kill(root, 'SIGKILL');
  await until('the root daemon to die', () => !alive(root));
  const down = await status('alice');
  assert.is(down.vif?.state, 'DOWN');
  assert.match(down.vif!.rootDaemon.message, /does not answer.*tp connect starts it again/);
  assert.ok((await leftovers()).includes('resolv.conf changed'), 'a killed daemon leaves its resolv.conf');
  const again = await tp('alice', 'connect', '--manager-address', manager, '--also-proxy', POD_SUBNET);
  assert.is(again.code, 0, again.stderr);
  lab.track(rootDaemonPid());
  assert.is((await status('alice')).vif?.state, 'UP');
  assert.is(await wsText('curl', '-sS', '--max-time', '20', `http://${ADDR.pod}/`), 'hello from the pod');
  assert.is((await tp('alice', 'quit')).code, 0);
  await until('no leftovers', async () => (await leftovers()).length === 0);
});

test('not root and no sudo: tp connect says so, and leaves no daemon and no session behind', async () => {
  // Its own directory: the lab's scratch directory is root's alone.
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'tpv-nobody-'));
  fs.chmodSync(home, 0o777);
  const asNobody = (...args: string[]) =>
    lab.exec(NS.ws, [
      'setpriv',
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      'env',
      `TP_RUN_DIR=${home}/run`,
      `TP_LOG_DIR=${home}/logs`,
      `PATH=${path.dirname(process.execPath)}:/usr/bin:/bin`,
      process.execPath,
      path.join(DIST, 'cli/main.js'),
      ...args,
    ]);
  try {
    const r = await asNobody('connect', '--manager-address', manager, '--also-proxy', POD_SUBNET);
    assert.is(r.code, 1);
    assert.match(
      r.stderr,
      /tp connect: the VIF needs root for its network interface.*(sudo is not installed|sudo asks for a password)/,
      r.stderr,
    );
    const st = await asNobody('status', '-o', 'json');
    assert.is(
      (JSON.parse(st.stdout) as StatusJson).state,
      'NOT_RUNNING',
      'the user daemon it started is gone',
    );
    assert.equal(await leftovers(), []);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

test('bad input: a CIDR that does not parse, --no-vif with VIF flags: a clear error, nothing started', async () => {
  const bad = await tp('alice', 'connect', '--manager-address', manager, '--never-proxy', '10.0.0.0/33');
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /invalid --never-proxy CIDR "10\.0\.0\.0\/33": expected ADDRESS\/PREFIX/);
  const noVif = await tp(
    'alice',
    'connect',
    '--manager-address',
    manager,
    '--no-vif',
    '--also-proxy',
    POD_SUBNET,
  );
  assert.is(noVif.code, 1);
  assert.match(noVif.stderr, /leave out --no-vif/);
  assert.is((await status('alice')).state, 'NOT_RUNNING');
  assert.equal(await leftovers(), []);
});

test.run();
