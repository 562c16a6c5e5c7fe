// The manager in enforcing mode over real gRPC on loopback, with the cluster's two answers played by fakes
// (who may do what; which pod an agent token belongs to): every entry point refuses a caller without
// credentials, a session's credential works for that session only, and each action is authorized as the
// session's user. The same rules against the lab's real API server: test/e2e/security.test.ts.
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../logging/logger.js';
import { parseCidr } from '../netaddr/parse.js';
import { withBearer } from '../rpc/call-credentials.js';
import type {
  AgentInfo,
  Arrival,
  InterceptInfo,
  RemainResponse,
  TunnelMessage,
  WorkloadInfoSnapshot,
} from '../rpc/gen/manager.js';
import { managerChannelOptions } from '../rpc/grpc-options.js';
import { ManagerClient } from '../rpc/manager-service.js';
import { errorDetails, hasStatus, unary } from '../rpc/unary-call.js';
import { echoSpec } from '../testbed/intercept-spec.js';
import { connectFlowSocket } from '../tunnel/flow-pool.js';
import { FramedCall } from '../tunnel/framed-call.js';
import { msg, streamInfo, TunnelCode } from '../tunnel/messages.js';
import { AccessControl } from './access-control.js';
import { CredentialAuthority, type Identity } from './credentials.js';
import { type RunningManager, startManager } from './server.js';

setLevel('error');

const user = (name: string): Identity => ({ user: name, uid: '', groups: [], extra: {} });
const agent = (name: string, namespace: string): AgentInfo => ({
  name,
  namespace,
  kind: 'Standalone',
  podName: `${name}-0`,
  podIp: '127.0.0.1',
  version: '0.1.0',
  mechanism: 'none',
  containers: [
    {
      name: 'app',
      ports: [{ name: '', appPort: 8080, agentPort: 15001, protocol: 'TCP', servicePorts: [] }],
      environment: {},
    },
  ],
  counters: undefined,
  directPort: 0,
});

let manager: RunningManager;
let client: ManagerClient;
const credentials = new CredentialAuthority();

/** A manager in enforcing mode on a free loopback port, with the fakes above, signing with `ca`. */
function startEnforcing(ca: CredentialAuthority): Promise<RunningManager> {
  return startManager({
    host: '127.0.0.1',
    port: 0,
    clientTtlMs: 15_000,
    agentTtlMs: 15_000,
    access: new AccessControl({
      mode: 'enforcing',
      credentials: ca,
      log: createLogger('access'),
      // alice may do everything in namespace a but revoke others' intercepts; bob everything in a and b.
      authorizer: {
        allowed: async (id, c) =>
          id.user === 'alice' ? c.namespace === 'a' && c.resource !== 'intercepts' : id.user === 'bob',
      },
      // An agent's token is "token-of:<namespace>/<pod>".
      agents: {
        verify: async (token, claim) =>
          token === `token-of:${claim.namespace}/${claim.podName}`
            ? {
                ok: true,
                value: {
                  serviceAccount: 'sa',
                  namespace: claim.namespace,
                  podName: claim.podName,
                  podUid: 'u',
                },
              }
            : { ok: false, reason: `its token belongs to ${token.replace('token-of:', 'pod ')}` },
      },
      reachable: () => [parseCidr('127.0.0.0/8')],
    }),
  });
}

const channelTo = (m: RunningManager) =>
  new ManagerClient(`127.0.0.1:${m.port}`, grpc.credentials.createInsecure(), managerChannelOptions());

test.before(async () => {
  manager = await startEnforcing(credentials);
  client = channelTo(manager);
});

test.after(async () => {
  client.close();
  await manager.stop();
});

/** A unary call with the given bearer token (none: ''). */
function call<Res>(
  token: string,
  start: (
    md: grpc.Metadata,
    o: Partial<grpc.CallOptions>,
    cb: (e: grpc.ServiceError | null, r: Res) => void,
  ) => unknown,
) {
  return unary<Res>((md, o, cb) => start(withBearer(md, token), o, cb), 5_000);
}

async function refused(p: Promise<unknown>, code: grpc.status, text: string) {
  try {
    await p;
  } catch (e) {
    assert.ok(hasStatus(e, code), `expected ${grpc.status[code]}, got ${errorDetails(e)}`);
    assert.match(errorDetails(e), text);
    return;
  }
  assert.unreachable(`expected a refusal (${text})`);
}

const clientInfo = { name: 'someone@laptop', installId: 'x', version: '0.1.0', namespace: '' };
const arriveAs = (name: string) =>
  call<Arrival>(credentials.issueIdentity(user(name)).token, (md, o, cb) =>
    client.arriveAsClient(clientInfo, md, o, cb),
  );
const arriveAgent = (info: AgentInfo, token = `token-of:${info.namespace}/${info.podName}`) =>
  call<Arrival>(token, (md, o, cb) => client.arriveAsAgent(info, md, o, cb));

function openTunnel(
  token: string,
  sessionId: string,
  dst: { ip: string; port: number },
): Promise<TunnelMessage> {
  const md = withBearer(new grpc.Metadata(), token);
  const t = client.tunnel(md);
  const first = new Promise<TunnelMessage>((resolve, reject) => {
    t.once('data', resolve);
    t.on('error', reject);
  });
  t.write(outboundOpen(sessionId, dst));
  return first.finally(() => t.cancel());
}

/** A workstation's OPEN of an outbound TCP flow (a flow connection's carries the credential). */
function outboundOpen(sessionId: string, dst: { ip: string; port: number }, credential = ''): TunnelMessage {
  return msg.open(
    streamInfo({
      connId: { protocol: 6, srcIp: '198.18.0.1', srcPort: 40000, dstIp: dst.ip, dstPort: dst.port },
      sessionId,
      credential,
    }),
  );
}

test('no credentials: no client session, no agent session', async () => {
  await refused(
    call('', (md, o, cb) => client.arriveAsClient(clientInfo, md, o, cb)),
    grpc.status.UNAUTHENTICATED,
    'cannot start a client session: no identity token',
  );
  await refused(
    call('forged', (md, o, cb) => client.arriveAsClient(clientInfo, md, o, cb)),
    grpc.status.UNAUTHENTICATED,
    'not an identity token of this traffic manager',
  );
  await refused(
    arriveAgent(agent('echo', 'a'), ''),
    grpc.status.UNAUTHENTICATED,
    'presented no ServiceAccount token',
  );
  // A token of another workload's pod.
  await refused(
    arriveAgent(agent('echo', 'a'), 'token-of:a/db-0'),
    grpc.status.UNAUTHENTICATED,
    'agent refused for a/echo (pod echo-0): its token belongs to pod a/db-0',
  );
});

test("a session's credential works for that session only; the user is authorized per action", async () => {
  const echoA = await arriveAgent(agent('echo', 'a'));
  const echoB = await arriveAgent(agent('echo', 'b'));
  const alice = await arriveAs('alice');
  const bob = await arriveAs('bob');
  const remain = (token: string, sessionId: string) =>
    call(token, (md, o, cb) => client.remain({ session: { sessionId, remainIntervalMs: 0 } }, md, o, cb));
  await remain(alice.credential, alice.sessionId);
  await refused(remain('', alice.sessionId), grpc.status.UNAUTHENTICATED, 'carries no session credential');
  await refused(
    remain(bob.credential, alice.sessionId),
    grpc.status.UNAUTHENTICATED,
    'not the one of session',
  );

  const spec = (namespace: string) =>
    echoSpec({ namespace, remotePort: 8080, targetHost: '127.0.0.1', targetPort: 18090 });
  const create = (token: string, sessionId: string, namespace: string) =>
    call<InterceptInfo>(token, (md, o, cb) =>
      client.createIntercept(
        { session: { sessionId, remainIntervalMs: 0 }, spec: spec(namespace) },
        md,
        o,
        cb,
      ),
    );
  await refused(
    create('', alice.sessionId, 'a'),
    grpc.status.UNAUTHENTICATED,
    'carries no session credential',
  );
  await refused(
    create(alice.credential, alice.sessionId, 'b'),
    grpc.status.PERMISSION_DENIED,
    'not allowed to intercept b/echo: user alice cannot patch standalones in b',
  );
  const mine = await create(alice.credential, alice.sessionId, 'a');
  assert.is(mine.spec!.client, 'alice@laptop', 'named by the authenticated user');

  // bob can neither take over alice's intercept, nor end it, nor her session, nor receive her connections.
  await refused(
    create(bob.credential, bob.sessionId, 'a'),
    grpc.status.ALREADY_EXISTS,
    'already intercepted by alice@laptop',
  );
  await refused(
    call(bob.credential, (md, o, cb) =>
      client.removeIntercept(
        { session: { sessionId: alice.sessionId, remainIntervalMs: 0 }, name: 'echo' },
        md,
        o,
        cb,
      ),
    ),
    grpc.status.UNAUTHENTICATED,
    'not the one of session',
  );
  await refused(
    call(bob.credential, (md, o, cb) =>
      client.depart({ sessionId: alice.sessionId, remainIntervalMs: 0 }, md, o, cb),
    ),
    grpc.status.UNAUTHENTICATED,
    'Depart refused',
  );
  const dial = client.watchDial(
    { sessionId: alice.sessionId, remainIntervalMs: 0 },
    withBearer(new grpc.Metadata(), bob.credential),
  );
  await refused(
    new Promise((_, reject) => dial.on('error', reject)),
    grpc.status.UNAUTHENTICATED,
    'WatchDial refused',
  );
  await remain(alice.credential, alice.sessionId);

  // An agent reviews only its own workload's intercepts.
  await refused(
    call(echoB.credential, (md, o, cb) =>
      client.reviewIntercept(
        {
          session: { sessionId: echoB.sessionId, remainIntervalMs: 0 },
          interceptId: mine.id,
          disposition: 2,
          message: '',
          container: '',
          environment: {},
        },
        md,
        o,
        cb,
      ),
    ),
    grpc.status.PERMISSION_DENIED,
    'the agent of b/echo cannot review intercept',
  );
  assert.ok(echoA.credential);

  // Listing: alice sees namespace a only, bob both.
  const list = async (a: Arrival) =>
    new Promise<string[]>((resolve, reject) => {
      const w = client.watchWorkloads(
        { session: { sessionId: a.sessionId, remainIntervalMs: 0 }, namespace: '' },
        withBearer(new grpc.Metadata(), a.credential),
      );
      w.once('data', (s: WorkloadInfoSnapshot) => {
        resolve(s.workloads.map((x) => `${x.namespace}/${x.name}`));
        w.cancel();
      });
      w.on('error', (e) => (hasStatus(e, grpc.status.CANCELLED) ? undefined : reject(e)));
    });
  assert.equal(await list(alice), ['a/echo']);
  assert.equal(await list(bob), ['a/echo', 'b/echo']);
});

test("revoking others' intercepts is its own permission", async () => {
  await arriveAgent(agent('db', 'a'));
  const alice = await arriveAs('alice');
  const bob = await arriveAs('bob');
  const session = (a: Arrival) => ({ sessionId: a.sessionId, remainIntervalMs: 0 });
  const mine = await call<InterceptInfo>(alice.credential, (md, o, cb) =>
    client.createIntercept(
      {
        session: session(alice),
        spec: {
          name: '',
          workload: 'db',
          namespace: 'a',
          workloadKind: '',
          mechanism: 'tcp',
          remotePort: 8080,
          portName: '',
          targetHost: '127.0.0.1',
          targetPort: 18091,
          client: '',
          serviceName: '',
          ingest: false,
          container: '',
          httpFilter: undefined,
        },
      },
      md,
      o,
      cb,
    ),
  );
  const revoke = (a: Arrival) =>
    call<{ intercepts: InterceptInfo[] }>(a.credential, (md, o, cb) =>
      client.revokeIntercepts(
        { session: session(a), workload: 'db', namespace: 'a', remotePort: 0 },
        md,
        o,
        cb,
      ),
    );
  // alice may intercept in a, but not end others' intercepts there.
  await refused(
    revoke(alice),
    grpc.status.PERMISSION_DENIED,
    "not allowed to end other users' intercepts of a/db: user alice cannot delete intercepts.tp.dev in a",
  );
  const ended = await revoke(bob);
  assert.equal(
    ended.intercepts.map((i) => i.id),
    [mine.id],
  );
  assert.equal((await revoke(bob)).intercepts, [], 'nothing left');
});

type Opener = (token: string, sessionId: string, dst: { ip: string; port: number }) => Promise<TunnelMessage>;

/** The same OPEN on a flow connection to the manager's port: the credential rides in the OPEN. */
const openFlowConnection: Opener = async (credential, sessionId, dst) => {
  const socket = await connectFlowSocket('127.0.0.1', manager.port);
  const call = new FramedCall(socket, 'manager');
  const first = new Promise<TunnelMessage>((resolve, reject) => {
    call.once('data', resolve);
    call.on('error', reject);
  });
  call.write(outboundOpen(sessionId, dst, credential));
  return first.finally(() => socket.destroy());
};

/** A stream's OPEN is admitted only with its session's credential, and outbound only to reachable networks. */
const admission = (open: Opener) => async () => {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const alice = await arriveAs('alice');
    const bob = await arriveAs('bob');
    const bare = await open('', alice.sessionId, { ip: '127.0.0.1', port });
    assert.is(bare.code, TunnelCode.DIAL_REJECT);
    assert.match(bare.error, 'carries no session credential');
    const stolen = await open(bob.credential, alice.sessionId, { ip: '127.0.0.1', port });
    assert.is(stolen.code, TunnelCode.DIAL_REJECT);
    const outside = await open(alice.credential, alice.sessionId, { ip: '192.0.2.1', port: 80 });
    assert.is(outside.code, TunnelCode.DIAL_REJECT);
    assert.match(outside.error, "192.0.2.1 is not in the cluster's networks");
    const ok = await open(alice.credential, alice.sessionId, { ip: '127.0.0.1', port });
    assert.is(ok.code, TunnelCode.DIAL_OK);
  } finally {
    server.close();
  }
};

test('tunnel: only with the session credential, outbound only to reachable networks', admission(openTunnel));

test(
  'a flow connection: only with the session credential in its OPEN, outbound only to reachable networks',
  admission(openFlowConnection),
);

test('a resume token arrives again as its user, also at a restarted manager with the same key', async () => {
  const key = crypto.randomBytes(32);
  const first = await startEnforcing(new CredentialAuthority(key));
  const c1 = channelTo(first);
  let token: string;
  try {
    const arrival = await call<Arrival>(
      new CredentialAuthority(key).issueIdentity(user('alice')).token,
      (md, o, cb) => c1.arriveAsClient(clientInfo, md, o, cb),
    );
    assert.ok(arrival.resumeToken, 'the Arrival carries a resume token');
    const renewed = await call<RemainResponse>(arrival.credential, (md, o, cb) =>
      c1.remain({ session: { sessionId: arrival.sessionId, remainIntervalMs: 0 } }, md, o, cb),
    );
    assert.ok(renewed.resumeToken, 'so does every Remain answer');
    token = renewed.resumeToken;
  } finally {
    c1.close();
    await first.stop();
  }
  // The manager restarted: same key (the chart's Secret), no sessions.
  const restarted = await startEnforcing(new CredentialAuthority(key));
  const c2 = channelTo(restarted);
  const other = await startEnforcing(new CredentialAuthority(crypto.randomBytes(32)));
  const c3 = channelTo(other);
  try {
    const again = await call<Arrival>(token, (md, o, cb) => c2.arriveAsClient(clientInfo, md, o, cb));
    const claims = new CredentialAuthority(key).verifyResume(again.resumeToken);
    assert.ok(claims.ok && claims.value.identity.user === 'alice', "the new session is alice's");
    assert.ok(
      await call(again.credential, (md, o, cb) =>
        c2.remain({ session: { sessionId: again.sessionId, remainIntervalMs: 0 } }, md, o, cb),
      ),
    );
    // Another key (a reinstalled manager) refuses it: the client then fetches an identity token.
    await refused(
      call<Arrival>(token, (md, o, cb) => c3.arriveAsClient(clientInfo, md, o, cb)),
      grpc.status.UNAUTHENTICATED,
      'cannot resume a client session: the resume token was not issued by this traffic manager',
    );
    // Agents get none: they arrive with their ServiceAccount token.
    const a = await call<Arrival>('token-of:a/echo-0', (md, o, cb) =>
      c2.arriveAsAgent(agent('echo', 'a'), md, o, cb),
    );
    assert.is(a.resumeToken, '');
  } finally {
    c2.close();
    c3.close();
    await restarted.stop();
    await other.stop();
  }
});

test.run();
