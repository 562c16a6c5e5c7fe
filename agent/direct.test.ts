// The agent's direct path (direct.ts with the listener) over real gRPC and sockets on loopback, with a
// stand-in workstation (a direct watch that answers as the user daemon does, or not) and a stand-in
// manager (its Tunnel answered by a dialer): a watched intercept's connection goes straight to the
// workstation; one whose watch ends before answering goes through the manager; one whose watch is silent
// goes to the app once the workstation dial deadline passes.
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Passthrough } from '../agentconfig/env.js';
import { createLogger, setLevel } from '../logging/logger.js';
import { AgentInfo, type DialRequest, type TunnelMessage } from '../rpc/gen/manager.js';
import { workstationChannelOptions } from '../rpc/grpc-options.js';
import { AgentClient, ManagerServiceDefinition } from '../rpc/manager-service.js';
import { freePort } from '../testbed/loopback.js';
import { dialTcp } from '../tunnel/dial.js';
import { answer, dialTarget } from '../tunnel/flow.js';
import { FLOW_CONNECTIONS_METADATA, FLOW_WINDOWS_METADATA, FramedCall } from '../tunnel/framed-call.js';
import { msg, streamInfo } from '../tunnel/messages.js';
import { TunnelStream } from '../tunnel/stream.js';
import { ConnectionCounters, type PortCounts } from './connection-counters.js';
import { DirectServer } from './direct.js';
import { PortListener } from './listeners.js';
import { AgentManagerSession } from './manager-session.js';

setLevel('error');
const DEADLINE_MS = 400;

/** A server that answers "<name>: <everything it read>" once the client half-closes. */
async function named(name: string): Promise<{ port: number; close(): void }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = '';
    s.on('data', (d) => {
      got += d;
    });
    s.on('end', () => s.end(`${name}: ${got}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

function exchange(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => s.end(text));
    let got = '';
    s.on('data', (d) => {
      got += d;
    });
    s.on('error', (e) => resolve(`error: ${e.message}`));
    s.on('end', () => resolve(got));
  });
}

/**
 * How the stand-in workstation treats the dial requests on its watch: answers on a Tunnel call
 * ('answer') or on a flow connection ('answer-flow'), ends the watch, stays silent, or answers DIAL_OK on
 * a flow connection and then vanishes: its watch cancelled, its flow connection left open ('vanish').
 */
type Behaviour = 'answer' | 'answer-flow' | 'end-watch' | 'silent' | 'vanish';

async function rig(
  behaviour: Behaviour,
  /**
   * Who accepts: the passthrough thread hands intercepted connections over; 'main' (as under eBPF steering)
   * has the listener's own server accept them, and move each to a socket with a ReadSwitch.
   */
  passthrough: Passthrough,
  /** `counts`: the listener's counters of its one app port, as they are now. */
  run: (agentPort: number, counts: () => PortCounts) => Promise<void>,
) {
  const app = await named('app');
  const laptop = await named('laptop');
  const viaManager = await named('via the manager');
  // The stand-in manager: every Tunnel it gets is dialed to "via the manager".
  const manager = new grpc.Server();
  manager.addService(ManagerServiceDefinition, {
    tunnel: (call: grpc.ServerDuplexStream<TunnelMessage, TunnelMessage>) =>
      void answer(
        new TunnelStream(call),
        (info) => (signal, onread) =>
          dialTcp('127.0.0.1', viaManager.port, info.dialTimeoutMs, signal, onread),
        2_000,
      ),
  } as never);
  const managerPort = await new Promise<number>((resolve, reject) =>
    manager.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const appPort = app.port;
  // The agent's session as a snapshot would leave it: intercept i1 of client session c1 on the app port.
  const session = new AgentManagerSession(
    `127.0.0.1:${managerPort}`,
    AgentInfo.fromPartial({}),
    [appPort],
    () => ({}),
  );
  session.sessionId = 'a1';
  session.managerTakesEarlyData = true;
  session.routes = new Map([[appPort, 'i1']]);
  session.direct = new Map([
    ['i1', { token: 'tok', clientSessionId: 'c1', targetHost: '127.0.0.1', targetPort: laptop.port }],
  ]);
  const direct = new DirectServer(() => session.direct, createLogger('test/direct'));
  await direct.listen(0);
  const counters = new ConnectionCounters([appPort]);
  const agentPort = await freePort();
  const listener = new PortListener({
    agentPort,
    appPorts: [appPort],
    listenAddress: '127.0.0.1',
    session,
    steered: false,
    passthrough,
    counters,
    workstationDialDeadlineMs: DEADLINE_MS,
    direct,
  });
  await listener.listen();
  // The stand-in workstation's watch.
  const client = new AgentClient(
    `127.0.0.1:${direct.port}`,
    grpc.credentials.createInsecure(),
    workstationChannelOptions(),
  );
  const watch = client.watchDial({ sessionId: 'c1', interceptId: 'i1', token: 'tok' });
  watch.on('error', () => {});
  const held: net.Socket[] = [];
  watch.on('data', (req: DialRequest) => {
    if (behaviour === 'end-watch') watch.cancel();
    const info = streamInfo({ connId: req.connId, sessionId: 'c1', relayId: req.relayId });
    const target = { host: req.targetHost, port: req.targetPort };
    // As the user daemon does (daemons/user/manager-connection.ts dial(), direct-links.ts tcpAgentReach()).
    if (behaviour === 'answer')
      void dialTarget(TunnelStream.open(client, { stream: 1 << 20, connection: 8 << 20 }), info, target);
    if (behaviour !== 'answer-flow' && behaviour !== 'vanish') return;
    const socket = net.connect({ host: '127.0.0.1', port: direct.port }, () => {
      const stream = new TunnelStream(FramedCall.open(socket, 'agent'));
      if (behaviour === 'answer-flow') {
        void dialTarget(stream, info, target);
        return;
      }
      held.push(socket);
      stream.send(msg.open(info));
      stream.send(msg.dialOk());
      setTimeout(() => watch.cancel(), 100);
    });
    socket.on('error', () => {});
  });
  const md = await new Promise<grpc.Metadata>((r) => watch.once('metadata', r));
  try {
    // What the workstation reads to send flow connections, and their windows (daemons/user/direct-links.ts).
    assert.equal(md.get(FLOW_CONNECTIONS_METADATA), ['1']);
    assert.equal(md.get(FLOW_WINDOWS_METADATA), ['1']);
    await run(agentPort, () => counters.snapshot().get(appPort)!);
  } finally {
    for (const h of held) h.destroy();
    watch.cancel();
    client.close();
    listener.close();
    direct.close();
    session.client.close();
    manager.forceShutdown();
    for (const s of [app, laptop, viaManager]) s.close();
  }
}

for (const passthrough of ['thread', 'main'] as const) {
  test(`${passthrough}: a watched intercept: the connection goes straight to the workstation, counted as direct`, () =>
    rig('answer', passthrough, async (agentPort, counts) => {
      assert.is(await exchange(agentPort, 'hello'), 'laptop: hello');
      assert.is(await exchange(agentPort, 'again'), 'laptop: again');
      const c = counts();
      assert.is(c.intercepted, 2);
      assert.is(c.direct, 2);
      assert.is(c.fellBack, 0);
    }));

  test(`${passthrough}: a watched intercept answered on a flow connection: straight to the workstation`, () =>
    rig('answer-flow', passthrough, async (agentPort, counts) => {
      assert.is(await exchange(agentPort, 'hello'), 'laptop: hello');
      assert.is(await exchange(agentPort, 'again'), 'laptop: again');
      assert.is(counts().direct, 2);
    }));

  test(`${passthrough}: the workstation vanishes after DIAL_OK on a flow connection: its watch's end hands the connection to the app`, () =>
    rig('vanish', passthrough, async (agentPort, counts) => {
      assert.is(await exchange(agentPort, 'hello'), 'app: hello');
      const c = counts();
      assert.is(c.direct, 1);
      assert.is(c.fellBack, 1);
    }));

  test(`${passthrough}: the watch ends before the workstation answered: the connection goes through the manager`, () =>
    rig('end-watch', passthrough, async (agentPort, counts) => {
      assert.is(await exchange(agentPort, 'hello'), 'via the manager: hello');
      const c = counts();
      assert.is(c.direct, 0);
      assert.is(c.fellBack, 0);
    }));

  test(`${passthrough}: a silent watch: the connection goes to the app, whole, once the deadline passes`, () =>
    rig('silent', passthrough, async (agentPort, counts) => {
      assert.is(await exchange(agentPort, 'hello'), 'app: hello');
      const c = counts();
      assert.is(c.direct, 0);
      assert.is(c.fellBack, 1);
    }));
}

test.run();
