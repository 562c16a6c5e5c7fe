import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { InterceptDisposition as D, type InterceptSpec } from '../rpc/gen/manager.js';
import { InterceptError, InterceptTable } from './intercepts.js';
import type { Workload } from './workloads.js';

const workload = (ports: number[]): Workload => ({
  name: 'echo',
  namespace: 'default',
  kind: 'Standalone',
  agentState: 'INSTALLED',
  agentMessage: '',
  ports: ports.map((p, i) => ({
    name: i === 0 ? 'http' : `p${p}`,
    appPort: p,
    agentPort: 15001 + i,
    protocol: 'TCP',
  })),
  agents: [],
  replicas: 1,
  readyReplicas: 1,
  mechanism: 'none',
});

const spec = (fields: Partial<InterceptSpec> = {}): InterceptSpec => ({
  name: '',
  workload: 'echo',
  namespace: 'default',
  workloadKind: '',
  mechanism: 'tcp',
  remotePort: 0,
  portName: '',
  targetHost: '',
  targetPort: 18090,
  client: '',
  ingest: false,
  container: '',
  ...fields,
});

const alice = { sessionId: 'c-alice', clientName: 'alice@laptop' };
const bob = { sessionId: 'c-bob', clientName: 'bob@desk' };

function refusal(fn: () => unknown): InterceptError {
  try {
    fn();
  } catch (e) {
    if (e instanceof InterceptError) return e;
    throw e;
  }
  throw new Error('expected an InterceptError');
}

test('a new intercept waits, then becomes active when an agent reviews it', () => {
  const t = new InterceptTable(() => 1000);
  const i = t.create(alice, spec({ remotePort: 18080 }), workload([18080]));
  assert.is(i.id, 'c-alice:echo');
  assert.is(i.disposition, D.WAITING);
  assert.is(i.spec!.client, 'alice@laptop');
  assert.is(i.spec!.targetHost, '127.0.0.1');
  const after = t.review({
    podName: 'echo-0',
    podIp: '10.0.0.7',
    interceptId: i.id,
    disposition: D.ACTIVE,
    message: '',
    environment: { A: '1' },
  });
  assert.is(after?.disposition, D.ACTIVE);
  assert.equal(after?.environment, { A: '1' });
  // The pod goes away: back to waiting.
  t.podGone('echo', 'default', 'echo-0');
  assert.is(t.get(i.id)?.disposition, D.WAITING);
});

test("an agent's error is the intercept's error, with the agent's message", () => {
  const t = new InterceptTable();
  const i = t.create(alice, spec(), workload([18080]));
  t.review({
    podName: 'echo-0',
    podIp: '',
    interceptId: i.id,
    disposition: D.AGENT_ERROR,
    message: 'this agent does not capture port 18080',
    environment: {},
  });
  assert.is(t.get(i.id)?.disposition, D.AGENT_ERROR);
  assert.match(t.get(i.id)!.message, /echo-0: this agent does not capture port 18080/);
});

test('one intercept per workload port: the second is refused with the holder named', () => {
  const t = new InterceptTable();
  t.create(alice, spec({ remotePort: 18080 }), workload([18080, 9090]));
  const e = refusal(() => t.create(bob, spec({ remotePort: 18080 }), workload([18080, 9090])));
  assert.is(e.code, 'already-exists');
  assert.match(e.message, /already intercepted by alice@laptop \(intercept "echo"\)/);
  // Another port of the same workload is fine.
  t.create(bob, spec({ name: 'echo-metrics', remotePort: 9090 }), workload([18080, 9090]));
  // When alice departs, her port is free again.
  assert.is(t.removeSession('c-alice').length, 1);
  t.create(bob, spec({ remotePort: 18080 }), workload([18080, 9090]));
});

test('the remote port: the only one, by name, or one the agent captures', () => {
  const t = new InterceptTable();
  assert.is(t.prepare(alice, spec(), workload([18080])).remotePort, 18080);
  assert.is(t.prepare(alice, spec({ portName: 'p9090' }), workload([18080, 9090])).remotePort, 9090);
  assert.match(
    refusal(() => t.prepare(alice, spec(), workload([18080, 9090]))).message,
    /say which with --port/,
  );
  const e = refusal(() => t.prepare(alice, spec({ remotePort: 9999 }), workload([18080])));
  assert.is(e.code, 'invalid-argument');
  assert.match(e.message, /does not capture port 9999: its agent captures 18080/);
});

test('only tcp, and a local port is required', () => {
  const t = new InterceptTable();
  assert.match(
    refusal(() => t.prepare(alice, spec({ mechanism: 'http' }), workload([1]))).message,
    /use --mechanism tcp/,
  );
  assert.match(
    refusal(() => t.prepare(alice, spec({ targetPort: 0 }), workload([1]))).message,
    /local port is missing/,
  );
});

test('leave removes by name; an unknown name is not found', () => {
  const t = new InterceptTable();
  t.create(alice, spec(), workload([18080]));
  assert.is(refusal(() => t.remove('c-alice', 'nope')).code, 'not-found');
  assert.is(refusal(() => t.remove('c-bob', 'echo')).code, 'not-found');
  t.remove('c-alice', 'echo');
  assert.equal(t.all(), []);
});

test('a review of a removed intercept is ignored', () => {
  const t = new InterceptTable();
  assert.is(
    t.review({
      podName: 'p',
      podIp: '',
      interceptId: 'c-x:gone',
      disposition: D.ACTIVE,
      message: '',
      environment: {},
    }),
    undefined,
  );
});

test('ingests: no port, no conflicts with intercepts or other ingests; the name must be new', () => {
  const t = new InterceptTable();
  const w = workload([18080, 19090]);
  t.create(alice, spec({ remotePort: 18080 }), w);
  const g = t.create(alice, spec({ ingest: true, name: 'echo-env', targetPort: 0 }), w);
  assert.equal(
    [g.spec!.remotePort, g.spec!.targetPort, g.spec!.mechanism, g.disposition],
    [0, 0, '', D.WAITING],
  );
  // Bob ingests the same workload, and intercepts a port: neither conflicts with Alice's ingest.
  t.create(bob, spec({ ingest: true, container: 'sidecar' }), w);
  t.create(bob, spec({ remotePort: 19090, name: 'other' }), w);
  const again = refusal(() => t.create(alice, spec({ ingest: true, name: 'echo-env' }), w));
  assert.match(again.message, 'you already have an ingest named "echo-env"');
  const clash = refusal(() => t.create(alice, spec({ ingest: true }), w));
  assert.match(clash.message, 'you already have an intercept named "echo" (port 18080 of echo)');
  // The accepting agent says which container the environment is from.
  const after = t.review({
    podName: 'echo-0',
    podIp: '10.0.0.7',
    interceptId: g.id,
    disposition: D.ACTIVE,
    message: '',
    environment: { WHO: 'sidecar' },
    container: 'sidecar',
  });
  assert.equal([after?.container, after?.environment], ['sidecar', { WHO: 'sidecar' }]);
});

test.run();
