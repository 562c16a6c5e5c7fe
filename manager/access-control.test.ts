// The gate in its three modes: enforcing refuses, permissive logs exactly the refusal it would have made
// and lets the call through, off checks nothing. Plus the visibility of listings.
import { Metadata } from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Logger } from '../logging/logger.js';
import { parseCidr } from '../netaddr/parse.js';
import { bearerToken, withBearer } from '../rpc/call-credentials.js';
import {
  AccessControl,
  AccessDenied,
  AuthorizationUnavailable,
  type SecurityMode,
} from './access-control.js';
import type { ResourceCheck } from './authorization.js';
import { CredentialAuthority, type Identity } from './credentials.js';
import type { ClientSession } from './sessions.js';
import { WorkloadVisibility } from './workload-visibility.js';

function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const emit = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    const f = Object.entries(fields ?? {})
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join('');
    lines.push(`${level} ${msg}${f}`);
  };
  const log = {
    lines,
    error: emit('error'),
    warn: emit('warn'),
    info: emit('info'),
    debug: emit('debug'),
    trace: emit('trace'),
    child: () => log,
    enabled: () => true,
  };
  return log;
}

const alice: Identity = { user: 'alice', uid: '', groups: ['dev'], extra: {} };
const echo = { name: 'echo', namespace: 'a', kind: 'Deployment' };

/** alice may patch deployments and port-forward in namespace a, nothing else. */
const aliceInA = {
  async allowed(identity: Identity, c: ResourceCheck) {
    return identity.user === 'alice' && c.namespace === 'a' && ['patch', 'create', 'list'].includes(c.verb);
  },
};

function gate(mode: SecurityMode) {
  const log = recordingLog();
  const credentials = new CredentialAuthority(Buffer.alloc(32, 7));
  const access = new AccessControl({
    mode,
    credentials,
    log,
    authorizer: aliceInA,
    reachable: () => [parseCidr('10.88.0.0/16'), parseCidr('10.96.0.0/12')],
  });
  const session: ClientSession = {
    kind: 'client',
    id: 'c-1',
    info: { name: 'alice@laptop', installId: '', version: '', namespace: '' },
    identity: alice,
    arrivedAt: 0,
    lastSeen: 0,
  };
  const withSession = withBearer(new Metadata(), credentials.sessionCredential('c-1'));
  return { access, log, credentials, session, withSession };
}

test('enforcing: no identity token, no session; a wrong credential, no call; missing RBAC, no action', async () => {
  const { access, log, credentials, session, withSession } = gate('enforcing');
  assert.throws(
    () => access.clientArrival(new Metadata()),
    (e: unknown) =>
      e instanceof AccessDenied && e.code === 'unauthenticated' && /no identity token/.test(e.message),
  );
  assert.equal(
    access.clientArrival(withBearer(new Metadata(), credentials.issueIdentity(alice).token)).identity,
    alice,
  );
  access.session(withSession, session, 'Remain');
  assert.throws(
    () => access.session(new Metadata(), session, 'Remain'),
    /Remain refused: the call carries no/,
  );
  await access.authorize(session, { kind: 'intercept', workload: echo }, 'CreateIntercept');
  try {
    await access.authorize(
      session,
      { kind: 'intercept', workload: { ...echo, namespace: 'b' } },
      'CreateIntercept',
    );
    assert.unreachable('alice has no rights in b');
  } catch (e) {
    assert.instance(e, AccessDenied);
    assert.is((e as AccessDenied).code, 'permission-denied');
    assert.is(
      (e as Error).message,
      'not allowed to intercept b/echo: user alice cannot patch deployments in b',
    );
  }
  assert.ok(log.lines.every((l) => !l.includes('permissive')));
});

test('permissive: every refusal is logged as "would refuse" with its reason, and the call goes on', async () => {
  const { access, log, session } = gate('permissive');
  assert.equal(access.clientArrival(new Metadata()), {});
  access.session(new Metadata(), session, 'Remain');
  await access.authorize(
    session,
    { kind: 'intercept', workload: { ...echo, namespace: 'b' } },
    'CreateIntercept',
  );
  assert.is(
    access.tunnelRefusal(session, bearerToken(new Metadata()), {
      dstIp: '10.88.0.5',
      outbound: true,
      label: '10.88.0.5:80',
    }),
    undefined,
  );
  assert.equal(log.lines, [
    'warn permissive: would refuse code=unauthenticated reason=cannot start a client session: no identity token; connect with `tp connect`, which authenticates you with your kubeconfig through the Kubernetes API server call=ArriveAsClient',
    'warn permissive: would refuse code=unauthenticated reason=Remain refused: the call carries no session credential call=Remain session=c-1',
    'warn permissive: would refuse code=permission-denied reason=not allowed to intercept b/echo: user alice cannot patch deployments in b call=CreateIntercept user=alice',
    'warn permissive: would refuse code=permission-denied reason=tunnel refused: the call carries no session credential flow=10.88.0.5:80 session=c-1',
  ]);
  // Listing: what would be hidden is logged and shown.
  assert.ok(
    await access.may(session, { kind: 'list-workloads', namespace: 'b', workloadKind: 'Deployment' }),
  );
  assert.is(log.lines.at(-1), 'warn permissive: would hide user=alice action=list-workloads namespace=b');
});

test('off (standalone): nothing is checked, nothing is logged', async () => {
  const { access, log, session } = gate('off');
  assert.equal(access.clientArrival(new Metadata()), {});
  access.session(new Metadata(), session, 'Remain');
  await access.authorize({ ...session, identity: undefined }, { kind: 'intercept', workload: echo }, 'x');
  assert.is(access.tunnelRefusal(session, '', { dstIp: '8.8.8.8', outbound: true, label: '' }), undefined);
  assert.equal(log.lines, []);
});

test('the tunnel: the session credential, and outbound only to the cluster networks', () => {
  const { access, session, withSession } = gate('enforcing');
  const flow = (dstIp: string, outbound = true) => ({ dstIp, outbound, label: `${dstIp}:80` });
  assert.is(access.tunnelRefusal(session, bearerToken(withSession), flow('10.88.0.5')), undefined);
  assert.is(access.tunnelRefusal(session, bearerToken(withSession), flow('10.96.0.10')), undefined);
  assert.match(
    access.tunnelRefusal(session, bearerToken(withSession), flow('169.254.169.254')) ?? '',
    "169.254.169.254 is not in the cluster's networks (10.88.0.0/16, 10.96.0.0/12)",
  );
  assert.match(
    access.tunnelRefusal(session, bearerToken(new Metadata()), flow('10.88.0.5')) ?? '',
    'carries no session credential',
  );
  // Answering a dial request goes where the agent is, not where the client says.
  assert.is(access.tunnelRefusal(session, bearerToken(withSession), flow('8.8.8.8', false)), undefined);
});

test('a session without a user (let in by permissive mode) is refused every action when enforcing', async () => {
  const { access, session } = gate('enforcing');
  try {
    await access.authorize(
      { ...session, identity: undefined },
      { kind: 'intercept', workload: echo },
      'CreateIntercept',
    );
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, 'the session has no authenticated user');
  }
});

test('an authorizer that cannot answer refuses as unavailable (try again), and says why in the log', async () => {
  const log = recordingLog();
  const access = new AccessControl({
    mode: 'enforcing',
    credentials: new CredentialAuthority(),
    log,
    authorizer: { allowed: () => Promise.reject(new Error('SubjectAccessReview failed: forbidden')) },
  });
  const session = { ...gate('enforcing').session };
  await access.authorize(session, { kind: 'install-agent', workload: echo }, 'EnsureAgent').then(
    () => assert.unreachable(),
    (e: Error) => {
      // Not "you may not": the API server did not answer (e.g. it restarts), so the client retries.
      assert.instance(e, AuthorizationUnavailable);
      assert.match(e.message, 'EnsureAgent: cannot check the permissions of alice');
      assert.match(e.message, 'SubjectAccessReview failed: forbidden');
    },
  );
  assert.ok(log.lines.some((l) => l.includes('cannot ask the cluster') && l.includes('forbidden')));
});

test('visibility: unknown pairs hidden until answered, then a change notice; prefetch answers first', async () => {
  let notices = 0;
  let now = 0;
  const asked: string[] = [];
  const v = new WorkloadVisibility(
    async (ns, kind) => {
      asked.push(`${ns}/${kind}`);
      return ns === 'a';
    },
    () => notices++,
    () => now,
  );
  await v.prefetch([{ namespace: 'a', kind: 'Deployment' }]);
  assert.ok(v.visible('a', 'Deployment'));
  assert.not.ok(v.visible('b', 'Deployment'), 'not asked yet: hidden');
  await new Promise((r) => setImmediate(r));
  assert.not.ok(v.visible('b', 'Deployment'), 'answered: still hidden');
  assert.equal(asked, ['a/Deployment', 'b/Deployment']);
  const before = notices;
  now = 60_000;
  v.visible('a', 'Deployment');
  await new Promise((r) => setImmediate(r));
  assert.is(asked.length, 3, 'a stale answer is asked again');
  assert.is(notices, before, 'the same answer sends nothing');
  v.close();
  now = 120_000;
  v.visible('a', 'Deployment');
  assert.is(asked.length, 3, 'no questions after close');
});

test.run();
