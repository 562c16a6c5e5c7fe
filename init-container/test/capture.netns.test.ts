// tp-init with the real iptables binaries in network namespaces this test creates: a pod namespace and a
// client namespace joined by a veth, on the nft and on the legacy backend, IPv4 and IPv6. The app in the
// pod answers with the peer it sees: the client's address when reached directly, loopback when the agent
// passed the connection through.
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { createLogger, setLevel } from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import { encodeProbes } from '../../probes/spec.js';
import { type NamespaceProcess, PodNetwork } from '../../testbed/pod-network.js';
import { applyCapture, type CaptureEnv } from '../capture.js';
import { type CommandResult, type CommandRunner, ExecRunner } from '../command-runner.js';
import { captureConfigFromFlags } from '../config.js';

setLevel('error');
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
const TP_INIT = path.join(root, 'dist/init-container/main.js');
const ECHO_SERVER = path.join(root, 'dist/init-container/test/echo-server.js');
const AGENT = path.join(root, 'dist/bundle/tp-agent.cjs');
const MANAGER = path.join(root, 'dist/manager/main.js');
const AGENT_UID = '7777';
const AGENT_PORT = '15001';
const MANAGER_PORT = '18081';
/** The agent's probe server: not among the captured ports, so the kubelet reaches it directly. */
const PROBE_PORT = '15021';
const PROBES = encodeProbes([
  {
    container: 'app',
    kind: 'readiness',
    timeoutSeconds: 1,
    httpGet: { port: 8080, scheme: 'HTTP', path: '/', httpHeaders: [] },
  },
]);
const CAPTURE_FLAGS = ['--ports', '8080,9090', '--agent-port', AGENT_PORT, '--agent-uid', AGENT_UID];

type Backend = 'nft' | 'legacy';

function tpInit(net: PodNetwork, args: string[], env?: NodeJS.ProcessEnv) {
  return net.exec(net.pod, process.execPath, [TP_INIT, ...args], env ? { env } : {});
}

/** `iptables-save -t nat` without comments and counters: what must not change on a second apply. */
async function natRules(net: PodNetwork, backend: Backend, family: 4 | 6): Promise<string> {
  const tool = `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`;
  const out = await net.exec(net.pod, tool, ['-t', 'nat']);
  assert.equal(out.code, 0, out.stderr);
  return out.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
}

interface Reply {
  /** curl's exit code: 0 answered, 7 connection refused, 28 timed out. */
  code: number;
  peer?: string;
}

/** An HTTP GET from a namespace, optionally as another UID; the app's answer names the peer it saw. */
async function get(net: PodNetwork, ns: string, host: string, port: number, uid?: string): Promise<Reply> {
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  const curl = ['curl', '-sS', '--max-time', '5', url];
  const out = uid
    ? await net.exec(ns, 'setpriv', ['--reuid', uid, '--regid', uid, '--clear-groups', ...curl])
    : await net.exec(ns, curl[0]!, curl.slice(1));
  if (out.code !== 0) return { code: out.code };
  return { code: 0, peer: (JSON.parse(out.stdout) as { peer: string }).peer };
}

/** A GET to the agent's probe port from the client namespace, as the kubelet's rewritten probe. */
async function askProbe(
  net: PodNetwork,
  urlPath: string,
): Promise<{ code: number; status?: number; body?: string }> {
  const url = `http://${net.podIp}:${PROBE_PORT}${urlPath}`;
  const out = await net.exec(net.client, 'curl', ['-sS', '--max-time', '5', '-w', '\n%{http_code}', url]);
  if (out.code !== 0) return { code: out.code };
  const lines = out.stdout.trimEnd().split('\n');
  const status = Number(lines.pop());
  return { code: 0, status, body: lines.join('\n').trim() };
}

function startApp(net: PodNetwork): Promise<NamespaceProcess> {
  const app = net.start(net.pod, process.execPath, [ECHO_SERVER, '8080', '9090']);
  return waitFor('the app to listen', async () => (/listening on 9090/.test(app.output()) ? app : undefined));
}

/** The tp agent, as its own UID, passing through 8080 and 9090 on one listener (SO_ORIGINAL_DST). */
async function startAgent(net: PodNetwork): Promise<NamespaceProcess[]> {
  const manager = net.start(net.pod, process.execPath, [
    MANAGER,
    '--standalone',
    '--listen',
    `127.0.0.1:${MANAGER_PORT}`,
  ]);
  const agent = net.start(
    net.pod,
    'setpriv',
    ['--reuid', AGENT_UID, '--regid', AGENT_UID, '--clear-groups', process.execPath, AGENT],
    {
      ...process.env,
      TP_MANAGER_ADDRESS: `127.0.0.1:${MANAGER_PORT}`,
      TP_WORKLOAD_NAME: 'echo',
      TP_NAMESPACE: 'default',
      TP_POD_NAME: 'echo-0',
      TP_POD_IP: net.podIp,
      TP_PORTS: `8080:${AGENT_PORT},9090:${AGENT_PORT}`,
      TP_PROBE_PORT: PROBE_PORT,
      TP_PROBES: PROBES,
    },
  );
  await waitFor(
    () => `the agent to pass traffic through (agent output: ${agent.output()})`,
    async () => {
      const reply = await get(net, net.client, net.podIp, 8080);
      return reply.peer === '127.0.0.1' ? true : undefined;
    },
  );
  return [agent, manager];
}

interface CounterView {
  families: { family: number; rules: { line: string; packets?: number }[] }[];
}

function packets(status: CounterView, family: number, match: RegExp): number {
  const f = status.families.find((x) => x.family === family)!;
  return f.rules.filter((r) => match.test(r.line)).reduce((n, r) => n + (r.packets ?? 0), 0);
}

async function statusJson(
  net: PodNetwork,
): Promise<{ code: number; status: CounterView & { inPlace: boolean } }> {
  const out = await tpInit(net, ['status', ...CAPTURE_FLAGS, '-o', 'json']);
  return { code: out.code, status: JSON.parse(out.stdout) };
}

async function lifecycle(backend: Backend, index: number): Promise<void> {
  const net = new PodNetwork(`${backend}`, index);
  try {
    if (backend === 'legacy') {
      // A pod whose other components already use legacy iptables: tp-init must follow them there.
      const seed = await net.exec(net.pod, 'iptables-legacy', ['-A', 'INPUT', '-i', 'lo', '-j', 'ACCEPT']);
      assert.equal(seed.code, 0, seed.stderr);
    }
    await startApp(net);
    assert.equal(
      await get(net, net.client, net.podIp, 8080),
      { code: 0, peer: net.clientIp },
      'direct before apply',
    );

    // apply: both families (the pod has a global IPv6 address), the rules printed as installed.
    const applied = await tpInit(net, ['apply', ...CAPTURE_FLAGS]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(
      applied.stdout,
      `IPv4 capture of app ports 8080,9090 to agent port 15001, agent uid 7777 (${backend} backend)`,
    );
    assert.match(
      applied.stdout,
      `IPv6 capture of app ports 8080,9090 to agent port 15001, agent uid 7777 (${backend} backend)`,
    );
    assert.match(
      applied.stdout,
      /-A TP_REDIRECT -p tcp -m comment --comment "tp:[\d.]+ [^"]+" -j REDIRECT --to-ports 15001/,
    );

    // apply again: nothing changes.
    const before4 = await natRules(net, backend, 4);
    const before6 = await natRules(net, backend, 6);
    assert.match(before4, /:TP_INBOUND/);
    const again = await tpInit(net, ['apply', ...CAPTURE_FLAGS]);
    assert.equal(again.code, 0, again.stderr);
    assert.fixture(await natRules(net, backend, 4), before4, 'IPv4 save identical after a second apply');
    assert.fixture(await natRules(net, backend, 6), before6, 'IPv6 save identical after a second apply');
    if (backend === 'nft') {
      const legacy = await net.exec(net.pod, 'iptables-legacy-save', []);
      assert.equal(legacy.stdout.trim(), '', 'no legacy table was created by probing');
    }

    // Agent down: REDIRECT sends the connection to a port nobody listens on, so it is refused (fails closed).
    assert.equal(
      (await get(net, net.client, net.podIp, 8080)).code,
      7,
      'connection refused with the agent down',
    );
    assert.equal((await get(net, net.client, net.podIp6, 8080)).code, 7, 'IPv6 refused with the agent down');
    // So are the probes rewritten to the agent: with the agent down the pod is not ready.
    assert.equal(
      (await askProbe(net, '/tp-probe/app/readiness')).code,
      7,
      'probe refused with the agent down',
    );

    const processes = await startAgent(net);
    const { status: idle } = await statusJson(net);

    // The probe port is not captured: the "kubelet" reaches the agent there, and the agent checks the app on
    // loopback, which capture never touches.
    assert.equal(await askProbe(net, '/tp-probe/agent'), {
      code: 0,
      status: 200,
      body: 'tp-agent: listening',
    });
    const probe = await askProbe(net, '/tp-probe/app/readiness');
    assert.equal(probe.status, 200, probe.body);
    assert.match(probe.body ?? '', `GET http://${net.podIp}:8080/: status 200`);

    // From the client: through the agent to the app, on both ports and both families.
    assert.equal(await get(net, net.client, net.podIp, 8080), { code: 0, peer: '127.0.0.1' });
    assert.equal(await get(net, net.client, net.podIp, 9090), { code: 0, peer: '127.0.0.1' });
    assert.equal(await get(net, net.client, net.podIp6, 8080), { code: 0, peer: '::1' });
    // Other ports are not captured.
    assert.equal((await get(net, net.client, net.podIp, 8081)).code, 7);
    // In-pod calls to the pod IP are captured; the agent's own are not; loopback calls are not.
    assert.equal(
      await get(net, net.pod, net.podIp, 8080),
      { code: 0, peer: '127.0.0.1' },
      'in-pod call captured',
    );
    assert.equal(
      await get(net, net.pod, net.podIp, 8080, AGENT_UID),
      { code: 0, peer: net.podIp },
      'agent uid not captured',
    );
    assert.equal(await get(net, net.pod, net.podIp6, 8080, AGENT_UID), { code: 0, peer: net.podIp6 });
    const { status: busy } = await statusJson(net);
    const inPod = /capture in-pod calls/;
    const beforeLoopback = packets(busy, 4, inPod);
    assert.equal(await get(net, net.pod, '127.0.0.1', 8080), { code: 0, peer: '127.0.0.1' });

    // status: in place, and the counters moved for what was captured.
    const { code, status } = await statusJson(net);
    assert.equal(code, 0);
    assert.ok(status.inPlace);
    assert.ok(
      packets(status, 4, /capture inbound/) >= packets(idle, 4, /capture inbound/) + 2,
      'inbound counter',
    );
    assert.ok(
      packets(status, 6, /capture inbound/) >= packets(idle, 6, /capture inbound/) + 1,
      'IPv6 counter',
    );
    assert.ok(beforeLoopback >= packets(idle, 4, inPod) + 1, 'in-pod counter');
    assert.equal(packets(status, 4, inPod), beforeLoopback, 'a loopback call is not captured');
    assert.ok(packets(status, 4, /never capture connections of the agent/) >= 1, 'agent uid counter');

    // Without flags: what apply installed, found from tp's comments in both families on this backend.
    const found = await tpInit(net, ['status', '-o', 'json']);
    assert.equal(found.code, 0, found.stderr);
    const discovered = JSON.parse(found.stdout) as {
      inPlace: boolean;
      iptables: { families: { family: number; backend: string; capture: string; inPlace: boolean }[] };
      ebpf: unknown;
    };
    assert.ok(discovered.inPlace);
    assert.equal(
      discovered.iptables.families.map((f) => `${f.family}/${f.backend}: ${f.capture}`),
      [4, 6].map(
        (f) =>
          `${f}/${backend}: IPv${f} capture of app ports 8080,9090 to agent port ${AGENT_PORT}, agent uid ${AGENT_UID}`,
      ),
    );
    assert.is(discovered.ebpf, null);
    const foundText = await tpInit(net, ['status']);
    assert.match(foundText.stdout, /ok +-A TP_INBOUND .* \[\d+ packets, \d+ bytes\]/);
    assert.match(foundText.stdout, /capture is in place/);
    // As the agent runs (its UID, no capabilities): exit 2 and how to get a live status.
    const asAgent = await net.exec(net.pod, 'setpriv', [
      '--reuid',
      AGENT_UID,
      '--regid',
      AGENT_UID,
      '--clear-groups',
      '--inh-caps',
      '-all',
      '--bounding-set',
      '-all',
      process.execPath,
      TP_INIT,
      'status',
    ]);
    assert.equal(asAgent.code, 2, asAgent.stderr);
    assert.match(
      asAgent.stderr,
      /cannot read the capture rules from this container: .*kubectl debug .*--profile=netadmin/,
    );
    assert.match(asAgent.stderr, /kubectl logs -n \S+ \S+ -c tp-init/);

    // The agent counted what it passed through: on 8080 the first request of startAgent, IPv4, IPv6 and the
    // in-pod call; on 9090 one. SIGUSR2 makes it log its counters. Its passthrough thread carried them (it
    // read each connection's port with SO_ORIGINAL_DST).
    const agent = processes[0]!;
    assert.match(agent.output(), /passing connections through on the passthrough thread/);
    agent.child.kill('SIGUSR2');
    const counted = await waitFor('the agent to log its connection counters', async () =>
      /connections: (app port 8080: .*)/.exec(agent.output())?.at(1),
    );
    const passedThrough = (port: number) =>
      Number(new RegExp(`app port ${port}: (\\d+) passed through`).exec(counted)?.[1]);
    assert.ok(passedThrough(8080) >= 4, counted);
    assert.is(passedThrough(9090), 1, counted);
    assert.match(counted, /app port 8080: \d+ passed through, 0 intercepted, 0 dial failures/);
    assert.match(counted, /probes: app\/readiness 1 \(0 failed\)/);
    for (const p of processes) await p.stop();

    // cleanup: nothing of tp's remains; status fails; traffic reaches the app directly again.
    const cleaned = await tpInit(net, ['cleanup']);
    assert.equal(cleaned.code, 0, cleaned.stderr);
    for (const family of [4, 6] as const) {
      const after = await natRules(net, backend, family);
      assert.not.match(after, /TP_|tp:/);
      assert.not.match(after, /^-A /m, 'no rule left in the nat table');
    }
    assert.equal((await tpInit(net, ['status', ...CAPTURE_FLAGS])).code, 1);
    const gone = await tpInit(net, ['status']);
    assert.equal(gone.code, 1);
    assert.match(gone.stdout, /^no tp capture rules/);
    assert.equal(await get(net, net.client, net.podIp, 8080), { code: 0, peer: net.clientIp });
    const noop = await tpInit(net, ['cleanup']);
    assert.equal(noop.code, 0);
    assert.match(noop.stdout, /nothing to clean/);
  } finally {
    await net.destroy();
  }
}

test('nft backend: apply, apply again, traffic through the agent, status, agent down, cleanup', async () => {
  await lifecycle('nft', 201);
});

test('legacy backend (pod already using legacy): the same', async () => {
  await lifecycle('legacy', 202);
});

/** Runs every command inside the pod namespace; fails the IPv6 commit of the rules on demand (not its --test run). */
class PodRunner implements CommandRunner {
  private readonly exec = new ExecRunner();
  constructor(
    private readonly ns: string,
    private readonly failIpv6Commit: boolean,
  ) {}
  run(command: string, args: readonly string[], input?: string): Promise<CommandResult> {
    const ipv6Commit =
      command.startsWith('ip6tables') && command.endsWith('-restore') && !args.includes('--test');
    if (this.failIpv6Commit && ipv6Commit && input?.includes(':TP_INBOUND'))
      return Promise.resolve({ code: 4, stdout: '', stderr: 'injected failure of the IPv6 commit\n' });
    return this.exec.run('/usr/sbin/ip', ['netns', 'exec', this.ns, command, ...args], input);
  }
}

for (const [backend, index] of [
  ['nft', 203],
  ['legacy', 204],
] as const) {
  test(`${backend}: when the IPv6 commit fails, IPv4 is rolled back to exactly what it was`, async () => {
    const net = new PodNetwork(`rb-${backend}`, index);
    try {
      const log = createLogger('test');
      const env = (fail: boolean): CaptureEnv => ({
        runner: new PodRunner(net.pod, fail),
        log,
        interfaces: {
          veth: [
            {
              address: net.podIp6,
              netmask: '',
              family: 'IPv6',
              mac: '',
              internal: false,
              cidr: null,
              scopeid: 0,
            },
          ],
        },
      });
      const config = (agentPort: string) =>
        captureConfigFromFlags({ ports: '8080', agentPort, ipv6: 'on', backend });

      // First apply fails: nothing of tp's stays behind in either family.
      const first = await applyCapture(env(true), config('15001')).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.instance(first, UsageError);
      assert.match(
        (first as Error).message,
        /applying the IPv6 rules failed .*injected failure/,
        (first as Error).message,
      );
      assert.not.match(await natRules(net, backend, 4), /TP_|tp:/);
      assert.not.match(await natRules(net, backend, 6), /TP_|tp:/);

      // With the rules installed, a failing re-apply (another agent port) leaves the old rules as they were.
      await applyCapture(env(false), config('15001'));
      const installed4 = await natRules(net, backend, 4);
      await applyCapture(env(true), config('15002')).catch(() => undefined);
      assert.fixture(await natRules(net, backend, 4), installed4);
      assert.match(installed4, /--to-ports 15001/);
    } finally {
      await net.destroy();
    }
  });
}

test('missing pieces: no NET_ADMIN, no iptables binary, agent port colliding with an app port', async () => {
  const net = new PodNetwork('err', 205);
  try {
    const noCap = await net.exec(net.pod, 'setpriv', [
      '--bounding-set',
      '-net_admin,-net_raw',
      '--inh-caps',
      '-all',
      process.execPath,
      TP_INIT,
      'apply',
      ...CAPTURE_FLAGS,
    ]);
    assert.equal(noCap.code, 1);
    assert.match(noCap.stderr, /tp-init: .*NET_ADMIN capability/);
    assert.not.match(noCap.stderr, /\n\s+at /, 'no stack trace');

    const noBinary = await tpInit(net, ['apply', ...CAPTURE_FLAGS], { ...process.env, PATH: '/nonexistent' });
    assert.equal(noBinary.code, 1);
    assert.match(noBinary.stderr, /no iptables binary found on PATH .*install the iptables package/);

    const collision = await tpInit(net, ['apply', '--ports', '8080,15001', '--agent-port', '15001']);
    assert.equal(collision.code, 1);
    assert.match(collision.stderr, /agent port 15001 is also an app port/);
    assert.not.match(await natRules(net, 'nft', 4), /TP_/);
  } finally {
    await net.destroy();
  }
});

test.run();
