import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { InterceptDisposition as D, type InterceptSpec } from '../rpc/gen/manager.js';
import { echoSpec } from '../testbed/intercept-spec.js';
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
    servicePorts: [],
  })),
  agents: [],
  replicas: 1,
  readyReplicas: 1,
  mechanism: 'none',
});

const spec = echoSpec;

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

test("a lost session's intercepts are held: agents no longer see them, others are told how long", () => {
  let now = 10_000;
  const t = new InterceptTable(() => now);
  const aliceLaptop = { ...alice, reclaimKey: { user: 'alice', installId: 'laptop-1' } };
  const i = t.create(aliceLaptop, spec({ remotePort: 18080 }), workload([18080]));
  t.review({
    podName: 'echo-0',
    podIp: '',
    interceptId: i.id,
    disposition: D.ACTIVE,
    message: '',
    environment: {},
  });
  assert.equal(
    t.holdSession('c-alice', now + 120_000).map((x) => x.id),
    [i.id],
  );
  assert.ok(t.isHeld(i.id));
  // The agent's snapshot no longer has it: its traffic goes to the app.
  assert.equal(t.forWorkload('echo', 'default'), []);
  assert.is(t.get(i.id)?.disposition, D.WAITING);
  // A late review of the held intercept changes nothing.
  assert.is(
    t.review({
      podName: 'echo-0',
      podIp: '',
      interceptId: i.id,
      disposition: D.ACTIVE,
      message: '',
      environment: {},
    }),
    undefined,
  );
  now += 30_000;
  const e = refusal(() =>
    t.create(
      { ...bob, reclaimKey: { user: 'bob', installId: 'desk-1' } },
      spec({ remotePort: 18080 }),
      workload([18080]),
    ),
  );
  assert.is(e.code, 'already-exists');
  assert.match(e.message, /already intercepted by alice@laptop \(intercept "echo"\)/);
  assert.match(e.message, /held for 90 s more so that alice@laptop can take it back/);
  // After the grace period it is gone and the port is free.
  now += 90_000;
  assert.equal(
    t.expireHeld().map((x) => x.id),
    [i.id],
  );
  assert.equal(t.all(), []);
  t.create(bob, spec({ remotePort: 18080 }), workload([18080]));
});

test('the same user on the same workstation takes its intercept back from a new session; nobody else does', () => {
  const t = new InterceptTable(() => 1_000);
  const key = { user: 'alice', installId: 'laptop-1' };
  const old = t.create({ ...alice, reclaimKey: key }, spec({ remotePort: 18080 }), workload([18080]));
  // While alice's session lives, a second session of hers is another client: refused.
  const second = { sessionId: 'c-alice-2', clientName: 'alice@laptop', reclaimKey: key };
  assert.match(
    refusal(() => t.create(second, spec({ remotePort: 18080 }), workload([18080]))).message,
    /already intercepted by alice@laptop \(intercept "echo"\)$/,
  );
  t.holdSession('c-alice', 121_000);
  // Same name claimed, another workstation: refused.
  const elsewhere = {
    sessionId: 'c-alice-2',
    clientName: 'alice@laptop',
    reclaimKey: { ...key, installId: 'other' },
  };
  assert.is(
    refusal(() => t.create(elsewhere, spec({ remotePort: 18080 }), workload([18080]))).code,
    'already-exists',
  );
  // Another user on the same workstation: refused.
  const mallory = { sessionId: 'c-m', clientName: 'alice@laptop', reclaimKey: { ...key, user: 'mallory' } };
  assert.is(
    refusal(() => t.create(mallory, spec({ remotePort: 18080 }), workload([18080]))).code,
    'already-exists',
  );
  // No reclaim key (nothing to prove who it is): refused.
  assert.is(
    refusal(() =>
      t.create(
        { sessionId: 'c-x', clientName: 'alice@laptop' },
        spec({ remotePort: 18080 }),
        workload([18080]),
      ),
    ).code,
    'already-exists',
  );
  // The same user and install id: prepare agrees, create replaces the held one.
  const again = { sessionId: 'c-alice-2', clientName: 'alice@laptop', reclaimKey: key };
  assert.is(t.prepare(again, spec({ remotePort: 18080 }), workload([18080])).remotePort, 18080);
  const fresh = t.create(again, spec({ remotePort: 18080 }), workload([18080]));
  assert.equal(
    fresh.replaced?.map((x) => x.id),
    [old.id],
  );
  assert.equal(
    t.all().map((x) => x.id),
    ['c-alice-2:echo'],
  );
  assert.not.ok(t.isHeld('c-alice-2:echo'));
  assert.equal(t.expireHeld(), []);
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
  assert.match(e.message, /has no port 9999: use one of container port 18080/);
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

const byHeader = (
  name: string,
  value: string,
  extra: Partial<InterceptSpec['httpFilter'] & object> = {},
) => ({
  headers: [{ name, value }],
  pathPrefix: '',
  pathEqual: '',
  pathRegex: '',
  ...extra,
});

test('personal intercepts share a port; a global one conflicts with them both ways, naming the holder', () => {
  const t = new InterceptTable();
  const w = workload([18080]);
  const a = t.create(alice, spec({ httpFilter: byHeader('X-Dev', 'alice') }), w);
  // Header names are stored lowercase.
  assert.equal(a.spec!.httpFilter!.headers, [{ name: 'x-dev', value: 'alice' }]);
  t.create(bob, spec({ httpFilter: byHeader('x-dev', 'bob') }), w);
  // The same filter again: refused, naming alice.
  let e = refusal(() => t.create(bob, spec({ name: 'again', httpFilter: byHeader('x-dev', 'alice') }), w));
  assert.is(e.code, 'already-exists');
  assert.match(e.message, /alice@laptop \(intercept "echo", x-dev=alice\) with the same filter/);
  // A global intercept beside personal ones: refused, naming one of their holders and the fix.
  e = refusal(() => t.create({ sessionId: 'c-carol', clientName: 'carol@pc' }, spec(), w));
  assert.match(e.message, /has a personal intercept by alice@laptop .*add --http-header/);
  // Both personal ones end: the port is free for a global one, which then refuses personal ones.
  t.removeSession('c-alice');
  t.removeSession('c-bob');
  t.create({ sessionId: 'c-carol', clientName: 'carol@pc' }, spec(), w);
  e = refusal(() => t.create(alice, spec({ httpFilter: byHeader('x-dev', 'alice') }), w));
  assert.match(
    e.message,
    /already intercepted by carol@pc \(intercept "echo"\): a personal intercept cannot share/,
  );
});

test('a filter that cannot match is refused with what to fix', () => {
  const t = new InterceptTable();
  const w = workload([18080]);
  const cases: [Partial<ReturnType<typeof byHeader>>, RegExp][] = [
    [{ pathRegex: '(' }, /--http-path-regex "\(" is not a valid regular expression/],
    [{ pathPrefix: 'api' }, /--http-path-prefix "api": a path starts with "\/"/],
    [{ pathPrefix: '/a', pathEqual: '/b' }, /at most one of/],
    [{ headers: [{ name: 'bad header', value: 'x' }] }, /not a valid header name/],
    [
      {
        headers: [
          { name: 'x-dev', value: 'a' },
          { name: 'X-DEV', value: 'b' },
        ],
      },
      /given twice with different values/,
    ],
  ];
  for (const [extra, message] of cases) {
    const e = refusal(() => t.create(alice, spec({ httpFilter: byHeader('x-dev', 'alice', extra) }), w));
    assert.is(e.code, 'invalid-argument');
    assert.match(e.message, message);
  }
  assert.is(t.all().length, 0);
});

test.run();
