// The eBPF capture mechanism on the real kernel: a pod namespace running an app on :8080, a client namespace
// joined by a veth, tp_steer attached to the pod's namespace, a fixture listener standing in for the agent.
import { type ChildProcess, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { UsageError } from '../../netaddr/parse.js';
import { type BpffsMount, ensureBpffs } from '../../testbed/bpffs.js';
import {
  createPodTestbed,
  onProcessEnd,
  type PodTestbed,
  RESPONDER,
  STEERING_LISTENER,
  waitForLine,
} from '../../testbed/pod-testbed.js';
import { apply, cleanup, probeSupport, status } from '../mechanism.js';
import { closeFd, linkInfo, mapInfo, openPinned } from '../objects.js';
import { LISTENERS_MAP, PORTS_MAP, STATS_MAP } from '../steering-keys.js';

const APP_PORT = 8080;
const OTHER_PORT = 9090;
const AGENT_UID = 7777;
const prefix = `tpe-${process.pid % 100000}`;
const pinRoot = `/sys/fs/bpf/${prefix}`;

let bpffs: BpffsMount | undefined;
let bed: PodTestbed;
let netnsPath: string;
let url: string;
let app: ChildProcess;

interface Answer {
  who: string;
  peer: string;
  localPort: number;
}
const ask = async (target = url): Promise<Answer> => JSON.parse(await bed.curlFromClient(target));

function bpftool<T>(...args: string[]): T {
  return JSON.parse(execFileSync('bpftool', ['-j', ...args], { encoding: 'utf8' }) || '[]') as T;
}
const linksOf = (inode: number) =>
  bpftool<{ id: number; netns_ino?: number }[]>('link', 'show').filter((l) => l.netns_ino === inode);

function pinnedInfo<T>(file: string, read: (fd: number) => T): T {
  const fd = openPinned(file);
  assert.ok(fd !== undefined, `${file} is pinned`);
  try {
    return read(fd!);
  } finally {
    closeFd(fd!);
  }
}

async function startListener(ports: number[]): Promise<ChildProcess> {
  const child = bed.spawnInPod(process.execPath, [STEERING_LISTENER, pinRoot, ports.join(',')]);
  const line = await waitForLine(child, /^(ready|error)/);
  assert.match(line, /^ready/, line);
  return child;
}

async function tell(child: ChildProcess, command: string, expect: RegExp): Promise<void> {
  child.stdin!.write(`${command}\n`);
  const line = await waitForLine(child, /^(steering|error)/);
  assert.match(line, expect);
}

function teardown(): void {
  try {
    if (netnsPath && fs.existsSync(netnsPath)) cleanup({ netnsPath, pinRoot });
  } catch {
    // best effort: the namespace goes next, which detaches the link anyway
  }
  bed?.destroy();
  for (const dir of fs.existsSync(pinRoot) ? fs.readdirSync(pinRoot) : []) {
    for (const f of fs.readdirSync(`${pinRoot}/${dir}`)) fs.rmSync(`${pinRoot}/${dir}/${f}`);
    fs.rmdirSync(`${pinRoot}/${dir}`);
  }
  if (fs.existsSync(pinRoot)) fs.rmdirSync(pinRoot);
  bpffs?.release();
}
onProcessEnd(teardown);

test.before(async () => {
  bpffs = ensureBpffs();
  bed = createPodTestbed(prefix);
  netnsPath = bed.podNetnsPath;
  url = `http://${bed.podIp}:${APP_PORT}/`;
  app = bed.spawnInPod(process.execPath, [RESPONDER, 'app', String(APP_PORT)]);
  await waitForLine(app, /^ready/);
});

test.after(teardown);

test('this machine supports eBPF capture (Linux >= 5.9, root, bpffs)', () => {
  const r = probeSupport({ pinRoot });
  assert.ok(r.supported, r.reason);
});

test('no intercept: the app answers directly and sees the client as its peer', async () => {
  const r = apply({ ports: [APP_PORT], netnsPath, pinRoot });
  assert.ok(r.changed);
  const answer = await ask();
  assert.equal(answer, { who: 'app', peer: bed.clientIp, localPort: APP_PORT });
  const s = status({ netnsPath, pinRoot });
  assert.ok(s.attached, s.problems.join('; '));
  const port = s.ports.find((p) => p.port === APP_PORT)!;
  assert.is(port.steering, false);
  assert.is(port.stats.steered, 0n);
  assert.is(port.stats.noListener, 1n); // looked at, not steered: the kernel's own lookup found the app
});

test('apply twice: nothing changes (same link, same program, one attachment)', () => {
  const before = status({ netnsPath, pinRoot });
  const r = apply({ ports: [APP_PORT], netnsPath, pinRoot });
  assert.is(r.changed, false, r.actions.join('; '));
  const after = status({ netnsPath, pinRoot });
  assert.equal(after.link, before.link);
  assert.equal(after.program, before.program);
  assert.is(linksOf(after.netnsInode).length, 1);
});

test('steering on: connections reach the listener with localPort = the app port; loopback still reaches the app', async () => {
  const listener = await startListener([APP_PORT]);
  try {
    for (let i = 0; i < 3; i++) {
      assert.equal(await ask(), { who: 'listener', peer: bed.clientIp, localPort: APP_PORT });
    }
    // The agent's passthrough dials 127.0.0.1:8080: never steered, or it would loop back to itself.
    const local = JSON.parse(await bed.curlFromPod(`http://127.0.0.1:${APP_PORT}/`)) as Answer;
    assert.is(local.who, 'app');
    const s = status({ netnsPath, pinRoot });
    const port = s.ports.find((p) => p.port === APP_PORT)!;
    assert.is(port.steering, true);
    assert.is(port.stats.steered, 3n);
    assert.is(port.stats.local, 1n);

    // The intercept ends: the agent takes its listener out, the app answers again.
    await tell(listener, 'steer', /^steering $/);
    assert.is((await ask()).who, 'app');
    await tell(listener, `steer ${APP_PORT}`, new RegExp(`^steering ${APP_PORT}$`));
    assert.is((await ask()).who, 'listener');
  } finally {
    listener.kill('SIGKILL');
  }
});

test('the listener process killed while steering: the app answers the next request (fail-open)', async () => {
  const listener = await startListener([APP_PORT]);
  assert.is((await ask()).who, 'listener');
  const exited = new Promise((resolve) => listener.once('exit', resolve));
  listener.kill('SIGKILL');
  await exited;
  assert.equal(await ask(), { who: 'app', peer: bed.clientIp, localPort: APP_PORT });
  const port = status({ netnsPath, pinRoot }).ports.find((p) => p.port === APP_PORT)!;
  assert.is(port.steering, false, 'the kernel removed the closed socket from tp_listeners');
});

test('IPv6: steered the same way, and the app answers when nothing is registered', async () => {
  const url6 = `http://[${bed.podIp6}]:${APP_PORT}/`;
  assert.equal(await ask(url6), { who: 'app', peer: bed.clientIp6, localPort: APP_PORT });
  const listener = await startListener([APP_PORT]);
  try {
    assert.equal(await ask(url6), { who: 'listener', peer: bed.clientIp6, localPort: APP_PORT });
  } finally {
    listener.kill('SIGKILL');
  }
});

test('a non-root agent steers once apply hands it the maps; another UID is told how to fix it', async () => {
  const r = apply({ ports: [APP_PORT], netnsPath, pinRoot, agentUid: AGENT_UID });
  assert.ok(r.changed);
  assert.is(apply({ ports: [APP_PORT], netnsPath, pinRoot, agentUid: AGENT_UID }).changed, false);
  const asUid = (uid: number) =>
    bed.spawnInPod('setpriv', [
      '--pdeathsig=KILL',
      `--reuid=${uid}`,
      `--regid=${uid}`,
      '--clear-groups',
      process.execPath,
      STEERING_LISTENER,
      pinRoot,
      String(APP_PORT),
    ]);
  const agent = asUid(AGENT_UID);
  try {
    assert.match(await waitForLine(agent, /^(ready|error)/), /^ready/);
    assert.is((await ask()).who, 'listener');
  } finally {
    agent.kill('SIGKILL');
  }
  const stranger = asUid(AGENT_UID + 1);
  const line = await waitForLine(stranger, /^(ready|error)/);
  stranger.kill('SIGKILL');
  assert.match(line, /may not open .*--agent-uid/);
});

test('the agent cannot steer a port tp-init did not capture', async () => {
  const child = bed.spawnInPod(process.execPath, [STEERING_LISTENER, pinRoot, String(OTHER_PORT)]);
  const line = await waitForLine(child, /^(ready|error)/);
  child.kill('SIGKILL');
  assert.match(line, /port 9090 is not captured by eBPF in this pod \(captured: 8080\)/);
});

test('apply with other ports: ports added and released, counters of kept ports kept', async () => {
  const before = status({ netnsPath, pinRoot }).ports.find((p) => p.port === APP_PORT)!;
  const r = apply({ ports: [APP_PORT, OTHER_PORT], netnsPath, pinRoot });
  assert.equal(r.actions, [`captured port ${OTHER_PORT}`]);
  const s = status({ netnsPath, pinRoot });
  assert.equal(
    s.ports.map((p) => p.port),
    [APP_PORT, OTHER_PORT],
  );
  assert.equal(s.ports[0]!.stats, before.stats);
  const back = apply({ ports: [APP_PORT], netnsPath, pinRoot });
  assert.equal(back.actions, [`released port ${OTHER_PORT}`]);
});

test('a namespace that is gone: its pins are swept by the next apply on the node', async () => {
  const gone = `${prefix}-gone`;
  execFileSync('ip', ['netns', 'add', gone]);
  let goneDir: string;
  try {
    goneDir = apply({ ports: [APP_PORT], netnsPath: `/run/netns/${gone}`, pinRoot }).pinDir;
  } finally {
    execFileSync('ip', ['netns', 'del', gone]);
  }
  assert.ok(fs.existsSync(goneDir));
  // The kernel tears a namespace down asynchronously; its link is defunct (netns inode 0) after that.
  await waitFor(
    'the link to go defunct',
    () => pinnedInfo(`${goneDir}/link`, linkInfo).netnsInode === 0,
    30_000,
  );
  const r = apply({ ports: [APP_PORT], netnsPath, pinRoot });
  assert.equal(r.actions, [`removed the pins of a deleted namespace: ${goneDir}`]);
  assert.not.ok(fs.existsSync(goneDir));
});

test('cleanup: no program, link, map or pin left; the app still answers', async () => {
  const s = status({ netnsPath, pinRoot });
  const mapIds = [PORTS_MAP, LISTENERS_MAP, STATS_MAP].map((m) => pinnedInfo(`${s.pinDir}/${m}`, mapInfo).id);
  const r = cleanup({ netnsPath, pinRoot });
  assert.is(r.removed.length, 5);
  await waitFor('the link to go', () => linksOf(s.netnsInode).length === 0, 30_000);
  // The kernel frees the program once the link's last reference is dropped, after an RCU grace period
  // (CI once listed it right after the link had gone), and the program its maps after another one.
  const programLeft = () => bpftool<{ id: number }[]>('prog', 'show').some((p) => p.id === s.program!.id);
  await waitFor('the program to go', () => !programLeft(), 30_000);
  const ourMapsLeft = () => {
    const ids = bpftool<{ id: number }[]>('map', 'show').map((m) => m.id);
    return mapIds.filter((id) => ids.includes(id));
  };
  await waitFor('the maps to go', () => ourMapsLeft().length === 0, 30_000);
  assert.equal(fs.readdirSync(pinRoot), []);
  assert.equal(cleanup({ netnsPath, pinRoot }).removed, []);
  assert.is((await ask()).who, 'app');
  assert.is(status({ netnsPath, pinRoot }).attached, false);
});

test('bad input: a namespace that does not exist, no ports', () => {
  assert.throws(
    () => apply({ ports: [APP_PORT], netnsPath: '/run/netns/tpe-does-not-exist', pinRoot }),
    (e: unknown) => e instanceof UsageError && /cannot be opened/.test(e.message),
  );
  assert.throws(
    () => apply({ ports: [], netnsPath, pinRoot }),
    (e: unknown) => e instanceof UsageError && /--ports/.test(e.message),
  );
  assert.not.ok(fs.existsSync(`${pinRoot}/${status({ netnsPath, pinRoot }).netnsInode}`));
});

test.run();
