// The Manager service over real gRPC on loopback: sessions and expiry, snapshots, the intercept data path
// (agent OPEN -> DialRequest -> client OPEN -> relay), and the manager as a dialer.
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setLevel } from '../logging/logger.js';
import {
  type AgentInfo,
  InterceptDisposition as D,
  type DialRequest,
  type InterceptInfoSnapshot,
  type SessionInfo,
  type TunnelMessage,
} from '../rpc/gen/manager.js';
import { managerChannelOptions } from '../rpc/grpc-options.js';
import { ManagerClient } from '../rpc/manager-service.js';
import { errorDetails, hasStatus, unary } from '../rpc/unary-call.js';
import { echoSpec } from '../testbed/intercept-spec.js';
import { dialTcp } from '../tunnel/dial.js';
import { type FlowOutcome, openFlow, originate, serveDial } from '../tunnel/flow.js';
import { connectFlowSocket } from '../tunnel/flow-pool.js';
import { FramedCall } from '../tunnel/framed-call.js';
import { msg, streamInfo, TunnelCode } from '../tunnel/messages.js';
import { TunnelStream } from '../tunnel/stream.js';
import { startManager } from './server.js';

setLevel('error');

const agentInfo = (appPort: number): AgentInfo => ({
  name: 'echo',
  namespace: 'default',
  kind: 'Standalone',
  podName: 'echo-0',
  podIp: '127.0.0.1',
  version: '0.1.0',
  mechanism: 'none',
  containers: [
    {
      name: 'app',
      ports: [{ name: '', appPort, agentPort: 15001, protocol: 'TCP', servicePorts: [] }],
      environment: {},
    },
  ],
  counters: undefined,
  directPort: 0,
});

const clientInfo = { name: 'alice@laptop', installId: 'x', version: '0.1.0', namespace: '' };
const session = (id: string): SessionInfo => ({ sessionId: id, remainIntervalMs: 0 });

async function rig(ttls = { clientTtlMs: 15_000, agentTtlMs: 15_000 }) {
  const manager = await startManager({ host: '127.0.0.1', port: 0, ...ttls });
  const client = new ManagerClient(
    `127.0.0.1:${manager.port}`,
    grpc.credentials.createInsecure(),
    managerChannelOptions(),
  );
  const call = <Res>(start: Parameters<typeof unary<Res>>[0]) => unary<Res>(start, 5000);
  return {
    manager,
    client,
    call,
    close: async () => {
      client.close();
      await manager.stop();
    },
  };
}

function firstMessages<T>(stream: grpc.ClientReadableStream<T>, until: (m: T) => boolean): Promise<T> {
  return new Promise((resolve, reject) => {
    stream.on('data', (m: T) => {
      if (until(m)) resolve(m);
    });
    stream.on('error', (e) => {
      if (!hasStatus(e, grpc.status.CANCELLED)) reject(e);
    });
  });
}

async function listen(onConnection: (s: net.Socket) => void): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

type Rig = Awaited<ReturnType<typeof rig>>;

/**
 * An active intercept of the agent's app port 18080 by alice, to the laptop's `port`, and a listener
 * (`front`) whose connections the "agent" originates through the manager, as agent/listeners.ts does.
 */
async function activeIntercept(r: Rig, port: number) {
  const agent = await r.call<SessionInfo>((md, o, cb) => r.client.arriveAsAgent(agentInfo(18080), md, o, cb));
  const alice = await r.call<SessionInfo>((md, o, cb) => r.client.arriveAsClient(clientInfo, md, o, cb));
  assert.is(alice.remainIntervalMs, 5000);

  // The client receives dial requests and answers them like the user daemon.
  const dials = r.client.watchDial(session(alice.sessionId));
  dials.on('data', (req: DialRequest) => {
    const stream = new TunnelStream(r.client.tunnel());
    const info = streamInfo({ connId: req.connId, sessionId: alice.sessionId, relayId: req.relayId });
    stream.send(msg.open(info));
    void serveDial(stream, info, (signal) => dialTcp(req.targetHost, req.targetPort, 1000, signal));
  });
  dials.on('error', () => {});

  const created = await r.call<{ id: string; disposition: D }>((md, o, cb) =>
    r.client.createIntercept(
      {
        session: session(alice.sessionId),
        spec: echoSpec({ targetHost: '127.0.0.1', targetPort: port }),
      },
      md,
      o,
      cb,
    ),
  );
  assert.is(created.disposition, D.WAITING);

  // The agent sees it, reviews it ACTIVE; the client's watch shows ACTIVE.
  const agentWatch = r.client.watchIntercepts(session(agent.sessionId));
  agentWatch.on('error', () => {});
  const seen = await firstMessages(agentWatch, (s: InterceptInfoSnapshot) => s.intercepts.length === 1);
  assert.is(seen.intercepts[0]!.id, created.id);
  const clientWatch = r.client.watchIntercepts(session(alice.sessionId));
  clientWatch.on('error', () => {});
  const active = firstMessages(
    clientWatch,
    (s: InterceptInfoSnapshot) => s.intercepts[0]?.disposition === D.ACTIVE,
  );
  await r.call((md, o, cb) =>
    r.client.reviewIntercept(
      {
        session: session(agent.sessionId),
        interceptId: created.id,
        disposition: D.ACTIVE,
        message: '',
        container: 'app',
        environment: { APP: 'env' },
      },
      md,
      o,
      cb,
    ),
  );
  const snapshot = await active;
  assert.equal(snapshot.intercepts[0]!.environment, { APP: 'env' });

  const outcomes: Promise<FlowOutcome>[] = [];
  const front = await listen((socket) => {
    const connId = { protocol: 6, srcIp: '10.0.0.9', srcPort: 5555, dstIp: '127.0.0.1', dstPort: 18080 };
    outcomes.push(
      originate(
        socket,
        new TunnelStream(r.client.tunnel()),
        streamInfo({ connId, sessionId: agent.sessionId, interceptId: created.id }),
      ),
    );
  });
  return {
    agent,
    front,
    outcomes,
    agentWatch,
    close: () => {
      front.server.close();
      agentWatch.cancel();
      clientWatch.cancel();
      dials.cancel();
    },
  };
}

/** A laptop app that answers each read with "laptop got <read>" and ends when the client does. */
const laptopApp = () =>
  listen((s) => s.on('data', (d) => s.write(`laptop got ${d}`)).on('end', () => s.end()));

test('an intercepted connection: agent OPEN -> DialRequest -> client OPEN -> bytes both ways', async () => {
  const r = await rig();
  const laptop = await laptopApp();
  try {
    const it = await activeIntercept(r, laptop.port);
    // A connection accepted by the "agent" goes through the manager to the laptop.
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ port: it.front.port, host: '127.0.0.1', allowHalfOpen: true }, () =>
        s.end('hello'),
      );
      let text = '';
      s.on('data', (d) => {
        text += d;
      });
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    assert.is(reply, 'laptop got hello');
    it.close();
  } finally {
    laptop.server.close();
    await r.close();
  }
});

test('a draining manager (SIGTERM) lets a connection in progress finish and starts no new one', async () => {
  const r = await rig();
  const laptop = await laptopApp();
  try {
    const it = await activeIntercept(r, laptop.port);
    const s = net.connect({ port: it.front.port, host: '127.0.0.1', allowHalfOpen: true });
    s.on('error', () => {});
    // The next answer, or why there is none (a reset connection must fail the test, not hang it).
    const next = () =>
      new Promise<string>((resolve, reject) => {
        const gone = () => reject(new Error('the connection closed before the answer'));
        s.once('close', gone);
        s.once('data', (d) => {
          s.off('close', gone);
          resolve(String(d));
        });
      });
    s.write('one');
    assert.is(await next(), 'laptop got one');

    let stopped = false;
    const stopping = r.manager.stop(10_000).then(() => {
      stopped = true;
    });
    // The agent is told to pass connections to its app: its watch ends.
    await new Promise<void>((resolve) => {
      it.agentWatch.on('end', resolve);
      it.agentWatch.on('status', () => resolve());
    });
    // A new flow is not taken: refused as "workstation unavailable", or the call itself is refused.
    const late = new TunnelStream(r.client.tunnel());
    const connId = { protocol: 6, srcIp: '10.0.0.9', srcPort: 5556, dstIp: '127.0.0.1', dstPort: 18080 };
    const refusal = await openFlow(
      late,
      streamInfo({ connId, sessionId: it.agent.sessionId, interceptId: 'any' }),
    ).then(
      () => 'opened',
      (e: Error) => e.message,
    );
    assert.match(refusal, /shutting down|the tunnel failed|ended the stream/);

    // The connection in progress still works both ways, and closes cleanly.
    s.write('two');
    assert.is(await next(), 'laptop got two');
    assert.not.ok(stopped, 'the manager waits for the connection in progress');
    const ended = new Promise<void>((resolve) => s.once('end', resolve));
    s.end();
    await ended;
    assert.is((await it.outcomes[0]!).kind, 'closed');
    await stopping;
    it.close();
  } finally {
    laptop.server.close();
    await r.close();
  }
});

test('a draining manager closes its flow connections that wait for a flow, and lets the flow on another finish', async () => {
  const r = await rig();
  const echo = await listen((s) => s.pipe(s));
  try {
    const alice = await r.call<SessionInfo>((md, o, cb) => r.client.arriveAsClient(clientInfo, md, o, cb));
    const idle = await connectFlowSocket('127.0.0.1', r.manager.port);
    const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()));
    idle.on('error', () => {});
    idle.resume();
    // A flow in progress on another flow connection.
    const busy = new TunnelStream(
      new FramedCall(await connectFlowSocket('127.0.0.1', r.manager.port), 'manager'),
    );
    const connId = { protocol: 6, srcIp: '10.1.0.1', srcPort: 1, dstIp: '127.0.0.1', dstPort: echo.port };
    await openFlow(busy, streamInfo({ connId, sessionId: alice.sessionId }));
    let closeSent: () => void = () => {};
    const farClosed = new Promise<void>((resolve) => {
      closeSent = resolve;
    });
    let echoedOne: (text: string) => void = () => {};
    const echoed = new Promise<string>((resolve) => {
      echoedOne = resolve;
    });
    busy.onMessage((m) => {
      if (m.code === TunnelCode.DATA) echoedOne(String(m.data));
      if (m.code === TunnelCode.CLOSE_SEND) closeSent();
    });

    let stopped = false;
    const stopping = r.manager.stop(10_000).then(() => {
      stopped = true;
    });
    await idleClosed;
    assert.not.ok(stopped, 'the idle flow connection closed during the drain, not at its end');
    busy.send(msg.data(Buffer.from('still here')));
    assert.is(await echoed, 'still here');
    // Ended as a flow ends: CLOSE_SEND each way, then the stream.
    busy.send(msg.closeSend());
    await farClosed;
    busy.end();
    await stopping;
  } finally {
    echo.server.close();
    await r.close();
  }
});

test('the manager dials for clients: DIAL_OK to a listener, DIAL_REJECT at once when refused', async () => {
  const r = await rig();
  const echo = await listen((s) => s.pipe(s));
  const closed = await listen(() => {});
  await new Promise((res) => closed.server.close(res));
  try {
    const alice = await r.call<SessionInfo>((md, o, cb) => r.client.arriveAsClient(clientInfo, md, o, cb));
    const open = async (port: number, sessionId = alice.sessionId) => {
      const call = r.client.tunnel();
      const got: TunnelMessage[] = [];
      const first = new Promise<TunnelMessage>((resolve) =>
        call.on('data', (m: TunnelMessage) => {
          got.push(m);
          if (got.length === 1) resolve(m);
        }),
      );
      call.on('error', () => {});
      const connId = { protocol: 6, srcIp: '10.1.0.1', srcPort: 1, dstIp: '127.0.0.1', dstPort: port };
      call.write(msg.open(streamInfo({ connId, sessionId })));
      const m = await first;
      return { call, m };
    };
    const t0 = Date.now();
    const refused = await open(closed.port);
    assert.is(refused.m.code, TunnelCode.DIAL_REJECT);
    assert.match(refused.m.error, /connection refused/);
    assert.ok(Date.now() - t0 < 2000, 'a refused dial is rejected promptly');
    refused.call.end();

    const ok = await open(echo.port);
    assert.is(ok.m.code, TunnelCode.DIAL_OK);
    ok.call.write(msg.data(Buffer.from('ping')));
    const echoed = await new Promise<TunnelMessage>((resolve) =>
      ok.call.on('data', (m: TunnelMessage) => m.code === TunnelCode.DATA && resolve(m)),
    );
    assert.is(echoed.data.toString(), 'ping');
    ok.call.write(msg.closeSend());
    await new Promise((res) => ok.call.on('end', res));

    const unknown = await open(echo.port, 'c-unknown');
    assert.is(unknown.m.code, TunnelCode.DIAL_REJECT);
    assert.match(unknown.m.error, /session c-unknown is unknown/);
    unknown.call.end();
  } finally {
    echo.server.close();
    await r.close();
  }
});

test('an agent flow for a gone intercept, or for a client without a dial stream, is rejected', async () => {
  const r = await rig();
  try {
    const agent = await r.call<SessionInfo>((md, o, cb) =>
      r.client.arriveAsAgent(agentInfo(18080), md, o, cb),
    );
    const call = r.client.tunnel();
    const first = new Promise<TunnelMessage>((resolve) => call.on('data', resolve));
    call.on('error', () => {});
    const connId = { protocol: 6, srcIp: '10.1.0.1', srcPort: 1, dstIp: '127.0.0.1', dstPort: 18080 };
    call.write(msg.open(streamInfo({ connId, sessionId: agent.sessionId, interceptId: 'c-x:echo' })));
    const m = await first;
    assert.is(m.code, TunnelCode.DIAL_REJECT);
    assert.match(m.error, /intercept c-x:echo is gone/);
    call.end();
  } finally {
    await r.close();
  }
});

test('sessions: Remain of an unknown session is NOT_FOUND; an expired client loses its intercepts', async () => {
  const r = await rig({ clientTtlMs: 600, agentTtlMs: 60_000 });
  try {
    const e = await r
      .call((md, o, cb) => r.client.remain({ session: session('c-nope') }, md, o, cb))
      .catch((x) => x);
    assert.ok(hasStatus(e, grpc.status.NOT_FOUND));
    assert.match(errorDetails(e), /arrive again/);

    const agent = await r.call<SessionInfo>((md, o, cb) =>
      r.client.arriveAsAgent(agentInfo(18080), md, o, cb),
    );
    const alice = await r.call<SessionInfo>((md, o, cb) => r.client.arriveAsClient(clientInfo, md, o, cb));
    assert.is(alice.remainIntervalMs, 200, 'a short TTL gets faster heartbeats');
    await r.call((md, o, cb) =>
      r.client.createIntercept(
        {
          session: session(alice.sessionId),
          spec: echoSpec({ name: 'mine', remotePort: 18080, targetPort: 1 }),
        },
        md,
        o,
        cb,
      ),
    );
    const watch = r.client.watchIntercepts(session(agent.sessionId));
    await firstMessages(watch, (s: InterceptInfoSnapshot) => s.intercepts.length === 1);
    // Alice goes silent: her intercept disappears from the agent's view.
    await firstMessages(watch, (s: InterceptInfoSnapshot) => s.intercepts.length === 0);
    assert.is(r.manager.core.sessions.client(alice.sessionId), undefined);
    watch.cancel();
  } finally {
    await r.close();
  }
});

test('a mount flow: only the owning session, answered by the agent that accepted the intercept', async () => {
  const r = await rig();
  // Stands in for the agent's sftp-server: answers every byte with "sftp:" + the byte.
  const sftp = await listen((s) => s.on('data', (d) => s.write(`sftp:${d}`)).on('end', () => s.end()));
  try {
    const agent = await r.call<SessionInfo>((md, o, cb) =>
      r.client.arriveAsAgent(agentInfo(18080), md, o, cb),
    );
    const alice = await r.call<SessionInfo>((md, o, cb) => r.client.arriveAsClient(clientInfo, md, o, cb));
    const bob = await r.call<SessionInfo>((md, o, cb) =>
      r.client.arriveAsClient({ ...clientInfo, name: 'bob@desk' }, md, o, cb),
    );
    const requests: DialRequest[] = [];
    const agentDials = r.client.watchDial(session(agent.sessionId));
    agentDials.on('data', (req: DialRequest) => {
      requests.push(req);
      const stream = new TunnelStream(r.client.tunnel());
      const info = streamInfo({ connId: req.connId, sessionId: agent.sessionId, relayId: req.relayId });
      stream.send(msg.open(info));
      void serveDial(stream, info, (signal) => dialTcp('127.0.0.1', sftp.port, 1000, signal));
    });
    agentDials.on('error', () => {});
    const ingest = await r.call<{ id: string }>((md, o, cb) =>
      r.client.createIntercept(
        {
          session: session(alice.sessionId),
          spec: echoSpec({ name: 'env', mechanism: '', targetPort: 0, ingest: true, container: 'app' }),
        },
        md,
        o,
        cb,
      ),
    );
    const open = async (sessionId: string, interceptId: string, mountReadWrite = false) => {
      const call = r.client.tunnel();
      const first = new Promise<TunnelMessage>((resolve) => call.on('data', resolve));
      call.on('error', () => {});
      const connId = { protocol: 6, srcIp: '127.0.0.1', srcPort: 0, dstIp: '127.0.0.1', dstPort: 0 };
      call.write(msg.open(streamInfo({ connId, sessionId, interceptId, mount: true, mountReadWrite })));
      return { call, m: await first };
    };
    // Not accepted by an agent yet: nothing to mount.
    const early = await open(alice.sessionId, ingest.id);
    assert.is(early.m.code, TunnelCode.DIAL_REJECT);
    assert.match(early.m.error, /no agent of default\/echo that accepted "env" serves mounts/);
    early.call.end();
    await r.call((md, o, cb) =>
      r.client.reviewIntercept(
        {
          session: session(agent.sessionId),
          interceptId: ingest.id,
          disposition: D.ACTIVE,
          message: '',
          container: 'app',
          environment: {},
        },
        md,
        o,
        cb,
      ),
    );
    // Bob knows Alice's intercept id (ids are visible) but it is not his: refused, no agent asked.
    const stolen = await open(bob.sessionId, ingest.id);
    assert.is(stolen.m.code, TunnelCode.DIAL_REJECT);
    assert.match(stolen.m.error, /only the session that owns one mounts its volumes/);
    stolen.call.end();
    assert.is(requests.length, 0);

    // Asked read-write: the agent is told (it still refuses writes on read-only volumes).
    const mine = await open(alice.sessionId, ingest.id, true);
    assert.is(mine.m.code, TunnelCode.DIAL_OK);
    assert.equal(
      requests.map((q) => [q.mount, q.container, q.interceptId, q.readWrite]),
      [[true, 'app', ingest.id, true]],
    );
    mine.call.write(msg.data(Buffer.from('x')));
    const answer = await new Promise<TunnelMessage>((resolve) =>
      mine.call.on('data', (m: TunnelMessage) => m.code === TunnelCode.DATA && resolve(m)),
    );
    assert.is(answer.data.toString(), 'sftp:x');
    mine.call.write(msg.closeSend());
    await new Promise((res) => mine.call.on('end', res));
    agentDials.cancel();
  } finally {
    sftp.server.close();
    await r.close();
  }
});

test.run();
