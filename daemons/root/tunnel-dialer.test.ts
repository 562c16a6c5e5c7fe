// The VIF's flows as tunnel streams, over real gRPC on loopback to a server that answers them as the
// manager does (tunnel/flow.ts serveDial for TCP, tunnel/udp-flow.ts serveUdp for UDP).
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../../logging/logger.js';
import { managerChannelOptions, managerServerOptions } from '../../rpc/grpc-options.js';
import { startTunnelServer } from '../../testbed/echo-tunnel.js';
import { dialTcp } from '../../tunnel/dial.js';
import { readOpen, serveDial } from '../../tunnel/flow.js';
import { listenForFlowsAndGrpc, serveFlowConnection } from '../../tunnel/flow-listener.js';
import { tcpFlowPool } from '../../tunnel/flow-pool.js';
import { FlowWindowGroup } from '../../tunnel/framed-call.js';
import { MANAGER_SHUTTING_DOWN, msg, sessionUnknown } from '../../tunnel/messages.js';
import { readSwitchOf } from '../../tunnel/read-switch.js';
import { TunnelStream } from '../../tunnel/stream.js';
import { serveUdp } from '../../tunnel/udp-flow.js';
import { DialRejectedError } from '../../vif/flows.js';
import { TunnelFlowDialer } from './tunnel-dialer.js';

setLevel('error');

/**
 * A manager's gRPC side answering Tunnel calls; `onCall` counts them. `refusing(n)`, when given, is the
 * DIAL_REJECT reason for the n-th call (from 1), or undefined to serve it.
 */
async function manager(
  onCall = () => {},
  refusing?: (n: number) => string | undefined,
  managerGapMs?: number,
  retryPausesMs?: number[],
) {
  let calls = 0;
  const server = await startTunnelServer(
    (call) => {
      onCall();
      const n = ++calls;
      const stream = new TunnelStream(call);
      readOpen(stream, 5000).then(
        (info) => {
          const refusal = refusing?.(n);
          if (refusal) {
            stream.dismiss(msg.dialReject(refusal));
            return;
          }
          const dst = info.connId!;
          if (dst.protocol === 17) void serveUdp(stream, info);
          else
            void serveDial(stream, info, (signal) =>
              dialTcp(dst.dstIp, dst.dstPort, info.dialTimeoutMs, signal),
            );
        },
        () => {},
      );
    },
    managerServerOptions(),
    managerChannelOptions(),
  );
  const client = server.client;
  const dialer = new TunnelFlowDialer({
    client,
    sessionId: () => 'test',
    log: createLogger('test'),
    ...(managerGapMs !== undefined ? { managerGapMs } : {}),
    ...(retryPausesMs ? { retryPausesMs } : {}),
  });
  return {
    dialer,
    client,
    calls: () => calls,
    close: async () => {
      server.close();
    },
  };
}

/**
 * A connected socket pair on loopback: `local` plays the accepted connection of the VIF's listener (which
 * accepts `paused`).
 */
async function socketPair(paused = false): Promise<{ local: net.Socket; client: net.Socket; close(): void }> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: paused });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect({
    port: (server.address() as net.AddressInfo).port,
    host: '127.0.0.1',
    allowHalfOpen: true,
  });
  const local = await accepted;
  return { local, client, close: () => server.close() };
}

function readAll(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    s.on('data', (d) => {
      text += d;
    });
    s.on('end', () => resolve(text));
  });
}

test('a TCP flow is dialed first, then pumps; what the destination sent before the attach is kept', async () => {
  const m = await manager();
  // The destination talks first (a banner), then echoes, and half-closes after the client does.
  const dest = net.createServer({ allowHalfOpen: true }, (s) => {
    s.write('banner\n');
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => dest.listen(0, '127.0.0.1', r));
  const port = (dest.address() as net.AddressInfo).port;
  try {
    const dial = await m.dialer.dialTcp({
      protocol: 6,
      srcIp: '198.18.0.1',
      srcPort: 1,
      dstIp: '127.0.0.1',
      dstPort: port,
    });
    // The kernel takes a moment to hand over the connection; the banner must wait for it.
    await new Promise((r) => setTimeout(r, 200));
    const pair = await socketPair();
    dial.attach(pair.local);
    const received = readAll(pair.client);
    pair.client.write('hello');
    pair.client.end();
    assert.is(await received, 'banner\nhello');
    pair.close();
  } finally {
    dest.close();
    await m.close();
  }
});

test('an adopted VIF connection is read straight into the flow: what it sent before, 3 MiB each way, both ends', async () => {
  const m = await manager();
  const dest = await echoServer();
  const port = (dest.address() as net.AddressInfo).port;
  const pair = await socketPair(true);
  try {
    const dial = await m.dialer.dialTcp({
      protocol: 6,
      srcIp: '198.18.0.1',
      srcPort: 2,
      dstIp: '127.0.0.1',
      dstPort: port,
    });
    // The client speaks before the listener's socket is adopted: its bytes wait in the kernel.
    const payload = Buffer.alloc(3 << 20);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 12)) & 0xff;
    const echoed = new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      pair.client.on('data', (d) => chunks.push(d));
      pair.client.on('end', () => resolve(Buffer.concat(chunks)));
    });
    pair.client.write(payload.subarray(0, 1000));
    await new Promise((r) => setTimeout(r, 50));
    const adopted = m.dialer.adopt(pair.local);
    assert.is.not(adopted, pair.local, 'a socket of its own');
    assert.ok(pair.local.destroyed, 'the accepted socket is closed');
    assert.ok(readSwitchOf(adopted), 'created with a ReadSwitch');
    let throughStream = 0;
    adopted.on('data', (d: Buffer) => {
      throughStream += d.length;
    });
    dial.attach(adopted);
    pair.client.end(payload.subarray(1000));
    const back = await echoed;
    assert.is(back.length, payload.length);
    assert.ok(back.equals(payload), 'every byte, in order');
    assert.is(throughStream, 0, "no read went through the socket's stream");
  } finally {
    pair.client.destroy();
    pair.close();
    dest.close();
    await m.close();
  }
});

test('a refused TCP destination rejects the dial', async () => {
  const m = await manager();
  const spare = net.createServer();
  await new Promise<void>((r) => spare.listen(0, '127.0.0.1', r));
  const port = (spare.address() as net.AddressInfo).port;
  spare.close();
  try {
    await m.dialer.dialTcp({
      protocol: 6,
      srcIp: '198.18.0.1',
      srcPort: 1,
      dstIp: '127.0.0.1',
      dstPort: port,
    });
    assert.unreachable('the dial must be rejected');
  } catch (e) {
    assert.ok(e instanceof DialRejectedError);
    assert.match((e as Error).message, /refused/);
    // The destination's refusal, not the manager's: the client's SYN gets its RST at once.
    assert.is(m.calls(), 1, 'no second attempt');
  } finally {
    await m.close();
  }
});

test('a manager that cannot take flows yet (restarted, the session not back): the flow waits, then goes through', async () => {
  // The new manager does not know the session until the user daemon arrives again; the old one is
  // stopping: both are waited out.
  const m = await manager(undefined, (n) =>
    n === 1 ? MANAGER_SHUTTING_DOWN : n <= 3 ? sessionUnknown('test') : undefined,
  );
  const dest = await echoServer();
  try {
    assert.is(await exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'after'), 'after');
    assert.is(m.calls(), 4, 'three refused attempts, then the flow');
  } finally {
    dest.close();
    await m.close();
  }
});

test('many flows waiting for the manager: one at a time asks whether it is back, then all go through', async () => {
  let down = true;
  const m = await manager(undefined, () => (down ? MANAGER_SHUTTING_DOWN : undefined));
  const dest = await echoServer();
  try {
    const port = (dest.address() as net.AddressInfo).port;
    const flows: Promise<string>[] = [];
    for (let i = 0; i < 20; i++) {
      flows.push(exchange(m.dialer, port, `flow ${i}`));
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 1_000));
    const whileDown = m.calls();
    down = false;
    assert.equal(
      await Promise.all(flows),
      flows.map((_, i) => `flow ${i}`),
    );
    // Each flow on its own would have asked every 0.1-0.5 s: about 20 x 4 times in this second and a half.
    assert.ok(whileDown <= 20, `${whileDown} attempts while the manager was down`);
  } finally {
    dest.close();
    await m.close();
  }
});

test('the user daemon arrived again (tryAgainNow): a flow waiting for the manager tries at once, not after its pause', async () => {
  let down = true;
  let refused!: () => void;
  const firstRefusal = new Promise<void>((r) => {
    refused = r;
  });
  // Pauses of a minute: the flow goes through within the test only if it is woken.
  const m = await manager(
    undefined,
    () => {
      if (!down) return undefined;
      refused();
      return MANAGER_SHUTTING_DOWN;
    },
    120_000,
    [60_000],
  );
  const dest = await echoServer();
  try {
    const flow = exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'woken');
    await firstRefusal;
    await new Promise((r) => setTimeout(r, 100)); // into its pause
    down = false;
    m.dialer.tryAgainNow();
    const bound = new Promise<string>((r) => setTimeout(() => r('still waiting after 10 s'), 10_000).unref());
    assert.is(await Promise.race([flow, bound]), 'woken');
    assert.is(m.calls(), 2, 'one refused attempt, then the flow');
  } finally {
    dest.close();
    await m.close();
  }
});

test('a manager unavailable for longer than the wait: the flow is refused with the reason, after the wait', async () => {
  const m = await manager(undefined, () => MANAGER_SHUTTING_DOWN, 700);
  const dest = await echoServer();
  try {
    await exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'never');
    assert.unreachable('the dial must be rejected');
  } catch (e) {
    assert.ok(e instanceof DialRejectedError, String(e));
    assert.match((e as Error).message, MANAGER_SHUTTING_DOWN);
    assert.ok(m.calls() > 1, `retried (${m.calls()} attempts)`);
  } finally {
    dest.close();
    await m.close();
  }
});

test('a closed dialer (the session ends) stops waiting for the manager', async () => {
  const m = await manager(undefined, () => MANAGER_SHUTTING_DOWN);
  const dest = await echoServer();
  try {
    const dial = exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'never');
    await new Promise((r) => setTimeout(r, 300));
    m.dialer.close();
    const attempts = m.calls();
    await dial.then(
      () => assert.unreachable('the dial must be rejected'),
      (e) => assert.ok(e instanceof DialRejectedError, String(e)),
    );
    assert.ok(m.calls() <= attempts + 1, 'at most the attempt in progress after close()');
  } finally {
    dest.close();
    await m.close();
  }
});

test('a UDP flow carries datagrams both ways', async () => {
  const m = await manager();
  const echo = dgram.createSocket('udp4');
  echo.on('message', (d, r) => echo.send(Buffer.concat([Buffer.from('echo:'), d]), r.port, r.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
  try {
    const flow = await m.dialer.dialUdp({
      protocol: 17,
      srcIp: '198.18.0.1',
      srcPort: 5000,
      dstIp: '127.0.0.1',
      dstPort: echo.address().port,
    });
    const answer = new Promise<string>((r) => {
      flow.onDatagram = (d) => r(d.toString());
    });
    flow.send(Buffer.from('ping'));
    assert.is(await answer, 'echo:ping');
    flow.close();
  } finally {
    echo.close();
    await m.close();
  }
});

/**
 * A manager's port taking flow connections (tunnel/flow-listener.ts), answering OPENs as the manager does.
 * `dropSecondFlow`: the first connection that carries a second flow is closed when that flow's OPEN comes,
 * as a manager restart closes a connection that waited in the pool a moment before it was taken.
 */
async function flowManager(
  o: {
    dropSecondFlow?: boolean;
    shuttingDown?: boolean;
    unknownSessionFlows?: number;
    brokenFlows?: number;
    /** The manager says its flow connections take WINDOW frames (ClusterInfo.flow_windows). */
    windows?: boolean;
  } = {},
) {
  const credentials: string[] = [];
  /** The type of the first frame on each connection (tunnel/framed-call.ts: 0 MESSAGE, 4 WINDOW). */
  const firstFrames: number[] = [];
  let connections = 0;
  let dropped = false;
  const listener = await listenForFlowsAndGrpc({
    server: new grpc.Server(),
    host: '127.0.0.1',
    port: 0,
    log: createLogger('test'),
    onFlowConnection: (socket, peer) => {
      connections++;
      socket.once('data', (b: Buffer) => firstFrames.push(b[0]!));
      let flows = 0;
      serveFlowConnection(socket, peer, (stream) => {
        readOpen(stream, 5000).then(
          (info) => {
            credentials.push(info.credential);
            if (o.shuttingDown) {
              stream.dismiss(msg.dialReject(MANAGER_SHUTTING_DOWN));
              return;
            }
            // The way to the manager broken (a port-forward cut): the connection ends before any answer.
            if (credentials.length <= (o.brokenFlows ?? 0)) {
              socket.destroy();
              return;
            }
            // As the manager refuses a session it does not know (yet): a DIAL_REJECT, then the flow's end.
            if (credentials.length <= (o.unknownSessionFlows ?? 0)) {
              stream.dismiss(msg.dialReject(sessionUnknown(info.sessionId)));
              return;
            }
            if (++flows === 2 && o.dropSecondFlow && !dropped) {
              dropped = true;
              socket.destroy();
              return;
            }
            const dst = info.connId!;
            void serveDial(stream, info, (signal) =>
              dialTcp(dst.dstIp, dst.dstPort, info.dialTimeoutMs, signal),
            );
          },
          () => {},
        );
      });
    },
  });
  const pool = tcpFlowPool('127.0.0.1', listener.port, createLogger('test'), new FlowWindowGroup());
  // Its gRPC side (on a port of its own here): the Tunnel calls a flow falls back to.
  let calls = 0;
  const grpcSide = await manager(() => {
    calls++;
  });
  const dialer = new TunnelFlowDialer({
    client: grpcSide.client,
    sessionId: () => 'test',
    log: createLogger('test'),
    flowConnections: {
      pool,
      enabled: () => true,
      windows: () => o.windows === true,
      credential: () => 'test.secret',
    },
  });
  return {
    dialer,
    credentials,
    firstFrames,
    connections: () => connections,
    calls: () => calls,
    close: () => {
      pool.close();
      listener.close();
      void grpcSide.close();
    },
  };
}

/** One request through the dialer to an echo server: what came back. */
async function exchange(dialer: TunnelFlowDialer, port: number, text: string): Promise<string> {
  const dial = await dialer.dialTcp({
    protocol: 6,
    srcIp: '198.18.0.1',
    srcPort: 1,
    dstIp: '127.0.0.1',
    dstPort: port,
  });
  const pair = await socketPair();
  try {
    dial.attach(pair.local);
    const received = readAll(pair.client);
    pair.client.end(text);
    return await received;
  } finally {
    pair.close();
  }
}

async function echoServer(): Promise<net.Server> {
  const dest = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => dest.listen(0, '127.0.0.1', r));
  return dest;
}

test('flow connections: TCP flows one after another share a connection, each OPEN carrying the credential', async () => {
  const m = await flowManager();
  const dest = await echoServer();
  try {
    for (let i = 0; i < 10; i++)
      assert.is(
        await exchange(m.dialer, (dest.address() as net.AddressInfo).port, `hello ${i}`),
        `hello ${i}`,
      );
    assert.equal(m.credentials, Array(10).fill('test.secret'));
    // The first flow's connection and the spare, then the ones handed back.
    assert.ok(m.connections() <= 3, `${m.connections()} connections for 10 flows`);
  } finally {
    dest.close();
    m.close();
  }
});

test("flow connections: a flow to a manager that takes WINDOW frames starts with the flow's window; to one that does not, with its OPEN", async () => {
  const dest = await echoServer();
  try {
    for (const windows of [true, false]) {
      const m = await flowManager({ windows });
      try {
        assert.is(await exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'hello'), 'hello');
        assert.equal(m.firstFrames.slice(0, 1), [windows ? 4 : 0], `windows: ${windows}`);
      } finally {
        m.close();
      }
    }
  } finally {
    dest.close();
  }
});

test('flow connections: a manager that is stopping refuses the flow there, and it goes as a Tunnel call', async () => {
  const m = await flowManager({ shuttingDown: true });
  const dest = await echoServer();
  try {
    assert.is(await exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'hello'), 'hello');
    assert.is(m.credentials.length, 1, 'tried on a flow connection first');
    assert.is(m.calls(), 1, 'then as a Tunnel call');
  } finally {
    dest.close();
    m.close();
  }
});

test('flow connections: a refused destination is refused once, not dialed again as a Tunnel call', async () => {
  const m = await flowManager();
  const spare = net.createServer();
  await new Promise<void>((r) => spare.listen(0, '127.0.0.1', r));
  const port = (spare.address() as net.AddressInfo).port;
  spare.close();
  try {
    const e = await exchange(m.dialer, port, 'hello').then(
      () => undefined,
      (e: Error) => e,
    );
    assert.ok(e instanceof DialRejectedError, `rejected: ${e}`);
    assert.match(e.message, /refused/);
    assert.is(m.credentials.length, 1, 'one OPEN on a flow connection');
    assert.is(m.calls(), 0, 'no Tunnel call');
  } finally {
    m.close();
  }
});

test('flow connections: a session the manager does not know yet is waited for on flow connections, not tried as a Tunnel call', async () => {
  // The user daemon arrived again (a new session) and the root daemon follows it a moment later; a Tunnel
  // call would carry the same unknown session.
  const m = await flowManager({ unknownSessionFlows: 3 });
  const dest = await echoServer();
  try {
    assert.is(await exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'after'), 'after');
    assert.is(m.credentials.length, 4, 'three refusals, then the flow');
    assert.is(m.calls(), 0, 'no Tunnel call');
  } finally {
    dest.close();
    m.close();
  }
});

test('flow connections: while every connection breaks before its answer the flow waits (no Tunnel call), then goes through', async () => {
  const m = await flowManager({ brokenFlows: 4 });
  const dest = await echoServer();
  try {
    assert.is(await exchange(m.dialer, (dest.address() as net.AddressInfo).port, 'after'), 'after');
    assert.is(m.credentials.length, 5, 'four broken, then the flow');
    assert.is(m.calls(), 0, 'no Tunnel call');
  } finally {
    dest.close();
    m.close();
  }
});

test('flow connections: a connection the manager closed as it was taken is replaced, the flow is not lost', async () => {
  const m = await flowManager({ dropSecondFlow: true });
  const dest = await echoServer();
  try {
    for (let i = 0; i < 4; i++)
      assert.is(
        await exchange(m.dialer, (dest.address() as net.AddressInfo).port, `hello ${i}`),
        `hello ${i}`,
      );
  } finally {
    dest.close();
    m.close();
  }
});

test.run();
