// The node agent's kernel-facing edges for real: a bridge in a scratch "node" namespace, a pod
// namespace on it, a container started through nsenter/unshare with bind mounts, a hostname and a
// non-root user, kubectl-exec style entry into it, and a teardown that leaves nothing behind.
// Everything runs inside a scratch namespace `tpn-node-<pid>`: the file re-runs itself there.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ContainerLogWriter } from './container-logs.js';
import {
  execInContainer,
  findHostTools,
  renderStartScript,
  signalGroup,
  spawnContainer,
} from './container-process.js';
import {
  bridgeMac,
  ensureBridge,
  netnsExists,
  netnsPath,
  type PodNetwork,
  removeBridge,
  setupPodNetwork,
  teardownPodNetwork,
} from './pod-network.js';

const run = promisify(execFile);
const NODE_NS = `tpn-node-${process.pid}`;
const inside =
  process.env.TPN_SANDBOX_TEST === NODE_NS.replace(`${process.pid}`, process.env.TPN_PARENT_PID ?? '');

if (!inside) {
  // The outer run: make the node namespace, run this file in it, always remove it.
  if (process.getuid?.() !== 0) {
    test('pod sandbox (needs root)', () => {});
    test.run();
  } else {
    execFileSync('ip', ['netns', 'add', NODE_NS]);
    try {
      const r = spawnSync(
        'nsenter',
        [`--net=/run/netns/${NODE_NS}`, '--', process.execPath, '--enable-source-maps', process.argv[1]!],
        {
          stdio: 'inherit',
          env: { ...process.env, TPN_SANDBOX_TEST: NODE_NS, TPN_PARENT_PID: String(process.pid) },
        },
      );
      process.exitCode = r.status ?? 1;
    } finally {
      // Anything the inner run left (it cleans up itself; this is the safety net).
      for (const ns of fs.readdirSync('/run/netns').filter((n) => n.startsWith(`tpn-pod-${process.pid}`))) {
        spawnSync('ip', ['netns', 'del', ns]);
      }
      execFileSync('ip', ['netns', 'del', NODE_NS]);
    }
  }
} else {
  const parent = process.env.TPN_PARENT_PID!;
  const tools = findHostTools();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-sandbox-'));
  const bridge = 'tpnbr0';
  const pod: PodNetwork = {
    netns: `tpn-pod-${parent}`,
    hostVeth: `tpnv${parent}`.slice(0, 15),
    ip: '10.250.0.2',
    prefix: 24,
    gateway: '10.250.0.1',
  };

  test.after(async () => {
    await teardownPodNetwork(tools, pod).catch(() => {});
    await removeBridge(tools, bridge).catch(() => {});
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('the bridge and the pod namespace: the pod reaches the node through its default route', async () => {
    await ensureBridge(tools, bridge, pod.gateway, pod.prefix);
    await setupPodNetwork(tools, bridge, pod);
    await setupPodNetwork(tools, bridge, pod); // repeatable (adoption after a restart)
    const routes = execFileSync('ip', ['-n', pod.netns, 'route']).toString();
    assert.match(routes, /default via 10\.250\.0\.1 dev eth0/);
    // The node's side of the bridge answers the pod: a server on the gateway address.
    const server = http.createServer((_req, res) => res.end('node says hi'));
    await new Promise<void>((resolve) => server.listen(18080, pod.gateway, resolve));
    try {
      // Asynchronously: the server answering lives in this process's event loop.
      const { stdout } = await run('nsenter', [
        `--net=${netnsPath(pod.netns)}`,
        'curl',
        '-sS',
        '--max-time',
        '3',
        `http://${pod.gateway}:18080/`,
      ]);
      assert.is(stdout, 'node says hi');
    } finally {
      server.close();
    }
    assert.is(fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), '1');
  });

  test('the bridge keeps its address when ports with lower MACs come and go: pods keep reaching the node', async () => {
    // (/sys/class/net shows the namespace sysfs was mounted in, not this one: ask ip.)
    const mac = () =>
      /link\/ether (\S+)/.exec(execFileSync('ip', ['-o', 'link', 'show', 'dev', bridge]).toString())?.[1];
    assert.is(mac(), bridgeMac(pod.gateway));
    assert.is(bridgeMac('10.244.0.1'), '0a:58:0a:f4:00:01');
    // The pod has resolved the gateway (the test above talked to it); a new port whose MAC is lower
    // than every other joins the bridge, then leaves, as pods' veths do.
    const other = `tpnx${parent}`.slice(0, 15);
    execFileSync('ip', [
      'link',
      'add',
      other,
      'address',
      '02:00:00:00:00:01',
      'type',
      'veth',
      'peer',
      'name',
      `${other}p`,
    ]);
    try {
      execFileSync('ip', ['link', 'set', other, 'master', bridge, 'up']);
      assert.is(mac(), bridgeMac(pod.gateway), 'the bridge MAC after a lower one joined');
    } finally {
      execFileSync('ip', ['link', 'del', other]);
    }
    assert.is(mac(), bridgeMac(pod.gateway), 'the bridge MAC after it left');
    const neigh = execFileSync('ip', ['-n', pod.netns, 'neigh', 'show', pod.gateway]).toString();
    if (neigh.includes('lladdr')) assert.match(neigh, bridgeMac(pod.gateway));
  });

  test('a container: bind mounts, hostname, user, exact env, logs; exec enters it', async () => {
    const volume = path.join(work, 'volume');
    fs.mkdirSync(volume);
    fs.writeFileSync(path.join(volume, 'greeting'), 'from a volume\n');
    const resolv = path.join(work, 'resolv.conf');
    fs.writeFileSync(resolv, 'nameserver 10.96.0.10\n');
    // A mount point that exists on the host (the test does not create host directories).
    const target = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-target-'));
    const launch = {
      netnsPath: netnsPath(pod.netns),
      hostname: 'sandbox-pod',
      mounts: [
        { source: resolv, target: '/etc/resolv.conf', readOnly: false, isFile: true },
        { source: volume, target, readOnly: true, isFile: false },
      ],
      workingDir: '/',
      uid: 1000,
      gid: 1000,
      supplementalGroups: [],
      env: { PATH: '/usr/bin:/bin', GREETING: 'hello', 'dotted.name': 'ok' },
      argv: [
        'sh',
        '-c',
        `id -u; hostname; cat /etc/resolv.conf; cat ${target}/greeting; touch ${target}/x 2>/dev/null || echo read-only; tr '\\0' '\\n' < /proc/$$/environ | sort; ip -4 -o addr show eth0 | awk '{print $4}'; sleep 30`,
      ],
    };
    const script = path.join(work, 'start.sh');
    fs.writeFileSync(script, renderStartScript(launch, tools));
    const child = spawnContainer(launch, script, tools);
    const log = new ContainerLogWriter(path.join(work, '0.log'));
    log.attach(child.stdout!, 'stdout');
    log.attach(child.stderr!, 'stderr');
    try {
      const deadline = Date.now() + 10_000;
      let text = '';
      while (!text.includes('10.250.0.2/24') && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        text = fs.existsSync(path.join(work, '0.log'))
          ? fs.readFileSync(path.join(work, '0.log'), 'utf8')
          : '';
      }
      const lines = text
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' ').slice(3).join(' '));
      assert.equal(lines, [
        '1000',
        'sandbox-pod',
        'nameserver 10.96.0.10',
        'from a volume',
        'read-only',
        // The environment the process was started with, exactly (a shell would hide dotted.name).
        'GREETING=hello',
        'PATH=/usr/bin:/bin',
        'dotted.name=ok',
        '10.250.0.2/24',
      ]);
      // The host saw none of it: its resolv.conf and hostname are untouched, the mount is private.
      assert.is.not(fs.readFileSync('/etc/resolv.conf', 'utf8'), 'nameserver 10.96.0.10\n');
      assert.is.not(os.hostname(), 'sandbox-pod');
      assert.not.ok(fs.existsSync(path.join(target, 'greeting')));
      // kubectl exec: the container's namespaces, user and env.
      const exec = execInContainer(
        { pid: child.pid!, workingDir: '/', uid: 1000, gid: 1000, env: launch.env },
        ['sh', '-c', `id -u; hostname; cat ${target}/greeting; echo $GREETING`],
        tools,
      );
      let out = '';
      exec.stdout!.on('data', (d) => {
        out += d;
      });
      exec.stdin!.end();
      const code = await new Promise((resolve) => exec.on('close', resolve));
      assert.is(code, 0);
      assert.is(out, '1000\nsandbox-pod\nfrom a volume\nhello\n');
    } finally {
      signalGroup(child.pid!, 'SIGKILL');
      await new Promise((resolve) => child.once('close', resolve));
      fs.rmSync(target, { recursive: true, force: true });
    }
  });

  test('teardown removes the namespace and both veth ends', async () => {
    await teardownPodNetwork(tools, pod);
    assert.not.ok(netnsExists(pod.netns));
    assert.not.match(execFileSync('ip', ['-o', 'link']).toString(), new RegExp(pod.hostVeth));
    await removeBridge(tools, bridge);
    assert.not.match(execFileSync('ip', ['-o', 'link']).toString(), /tpnbr0/);
  });

  test.run();
}
