// The daemon's direct watches (direct-links.ts) against a stand-in for an agent's direct service, over real
// gRPC on loopback: which intercepts get a watch, what the watch shows, and that whatever answers on the
// pod's port cannot choose what the workstation dials.
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import {
  InterceptDisposition as D,
  type DialRequest,
  type DirectDialWatch,
  InterceptInfo,
} from '../../rpc/gen/manager.js';
import { AgentServiceDefinition } from '../../rpc/manager-service.js';
import { FLOW_CONNECTIONS_METADATA, FLOW_WINDOWS_METADATA } from '../../tunnel/framed-call.js';
import { streamInfo } from '../../tunnel/messages.js';
import { DirectLinks, type FlowOpener } from './direct-links.js';

function intercept(id: string, session: string, token: string, directPort = 15022): InterceptInfo {
  return InterceptInfo.fromPartial({
    id,
    spec: { name: id, workload: 'echo', namespace: 'shop', targetHost: '127.0.0.1', targetPort: 18190 },
    clientSessionId: session,
    disposition: D.ACTIVE,
    pods: [{ podName: 'echo-0', podIp: '10.244.0.9', disposition: D.ACTIVE, message: '', directPort }],
    directToken: token,
  });
}

/**
 * A stand-in for an agent's direct service: each watch answers with `metadata` and one DialRequest of what
 * a rogue listener on the pod's port might send (another host, another port, a mount).
 */
async function standIn(metadata: Record<string, string>) {
  const watches: { request: DirectDialWatch; cancelled: boolean }[] = [];
  const server = new grpc.Server();
  server.addService(AgentServiceDefinition, {
    watchDial: (call: grpc.ServerWritableStream<DirectDialWatch, DialRequest>) => {
      const w = { request: call.request, cancelled: false };
      watches.push(w);
      call.on('cancelled', () => {
        w.cancelled = true;
      });
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(metadata)) md.set(k, v);
      call.sendMetadata(md);
      call.write({
        relayId: 'r1',
        connId: undefined,
        interceptId: 'someone-else',
        targetHost: '10.9.9.9',
        targetPort: 22,
        dialTimeoutMs: 5000,
        mount: true,
        container: 'app',
        readWrite: true,
      });
    },
    tunnel: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.end(),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, port, watches };
}

/** The daemon's links to the stand-in: where it reached, what it was asked to dial and how. */
function linksTo(port: number) {
  const reached: string[] = [];
  const dials: { req: DialRequest; flow?: FlowOpener }[] = [];
  /** Each flow connection the daemon asked the reach for: whether it sets the flow's windows. */
  const flows: boolean[] = [];
  const flow = async (_info: unknown, _target: unknown, peerTakesWindows: boolean) => {
    flows.push(peerTakesWindows);
  };
  const warmed = { count: 0 };
  const links = new DirectLinks(
    's1',
    (pod) => {
      reached.push(`${pod.namespace}/${pod.podName}:${pod.port}`);
      return Promise.resolve({
        address: `127.0.0.1:${port}`,
        close: async () => {},
        flow,
        warm: () => {
          warmed.count++;
        },
      });
    },
    (_client, req, how) => dials.push({ req, flow: how }),
  );
  return { links, reached, dials, flows, warmed };
}

test('a watch per accepted pod, with the secret; the workstation dials its own target whatever the far end asks', async () => {
  const { server, port, watches } = await standIn({});
  const { links, reached, dials, warmed } = linksTo(port);
  try {
    links.sync([
      intercept('s1:echo', 's1', 'tok'),
      // Not this session's, no secret (an older manager), no direct port (an older agent): no watch.
      intercept('s2:echo', 's2', 'other'),
      intercept('s1:old-manager', 's1', ''),
      intercept('s1:old-agent', 's1', 'tok2', 0),
    ]);
    await waitFor('the dial request', async () => dials.length > 0 || undefined);
    assert.equal(reached, ['shop/echo-0:15022']);
    assert.equal(
      watches.map((w) => w.request),
      [{ sessionId: 's1', interceptId: 's1:echo', token: 'tok' }],
    );
    const d = dials[0]!.req;
    // An agent that does not say it takes flow connections (an older one) gets Tunnel calls.
    assert.is(dials[0]!.flow, undefined);
    assert.is(warmed.count, 0, 'no port-forward for flow connections it would refuse');
    assert.is(d.relayId, 'r1');
    assert.is(d.interceptId, 's1:echo');
    assert.is(d.targetHost, '127.0.0.1');
    assert.is(d.targetPort, 18190);
    assert.is(d.mount, false);
    assert.match(links.state('s1:echo', 'echo-0') ?? '', /^straight from the agent/);
    assert.is(links.state('s1:old-agent', 'echo-0'), undefined);

    // The intercept gone from the snapshot: its watch is cancelled.
    links.sync([]);
    await waitFor('the watch to be cancelled', async () => watches[0]!.cancelled || undefined);
    assert.is(links.state('s1:echo', 'echo-0'), undefined);
  } finally {
    links.stop();
    server.forceShutdown();
  }
});

test('an agent whose watch says it takes flow connections gets each connection on one of its own; the windows when it says it takes them too', async () => {
  const takesFlows = { [FLOW_CONNECTIONS_METADATA]: '1' };
  for (const [metadata, windows] of [
    [takesFlows, false],
    [{ ...takesFlows, [FLOW_WINDOWS_METADATA]: '1' }, true],
  ] as const) {
    const { server, port } = await standIn(metadata);
    const { links, dials, flows, warmed } = linksTo(port);
    try {
      links.sync([intercept('s1:echo', 's1', 'tok')]);
      await waitFor('the dial request', async () => dials.length > 0 || undefined);
      assert.ok(dials[0]!.flow, 'a flow connection of its own');
      await dials[0]!.flow!(streamInfo({ connId: undefined, sessionId: 's1' }), {
        host: '127.0.0.1',
        port: 18190,
      });
      assert.equal(flows, [windows], `the flow's windows set: ${windows}`);
      assert.is(warmed.count, 1, 'the port-forward for them opened ahead of the first');
      assert.is(dials[0]!.req.targetPort, 18190);
    } finally {
      links.stop();
      server.forceShutdown();
    }
  }
});

test.run();
