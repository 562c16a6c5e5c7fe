// UDP flows over real gRPC on loopback: the originating side (the root daemon's) and the dialing side
// (the manager's serveUdp) with a real UDP echo server as the destination.
import * as dgram from 'node:dgram';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setLevel } from '../logging/logger.js';
import { managerChannelOptions, managerServerOptions } from '../rpc/grpc-options.js';
import type { ManagerClient } from '../rpc/manager-service.js';
import { startTunnelServer } from '../testbed/echo-tunnel.js';
import { readOpen } from './flow.js';
import { streamInfo } from './messages.js';
import { TunnelStream } from './stream.js';
import { openUdp, serveUdp, UdpDialRejected, type UdpOutcome, type UdpTunnelFlow } from './udp-flow.js';

setLevel('error');

interface Rig {
  client: InstanceType<typeof ManagerClient>;
  echoPort: number;
  outcomes: Promise<UdpOutcome>[];
  close(): Promise<void>;
}

async function rig(idleTimeoutMs?: number): Promise<Rig> {
  const echo = dgram.createSocket('udp4');
  echo.on('message', (m, r) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
  const outcomes: Promise<UdpOutcome>[] = [];
  const server = await startTunnelServer(
    (call) => {
      const stream = new TunnelStream(call);
      readOpen(stream, 5000).then(
        (info) => outcomes.push(serveUdp(stream, info, idleTimeoutMs ? { idleTimeoutMs } : {})),
        () => {},
      );
    },
    managerServerOptions(),
    managerChannelOptions(),
  );
  const client = server.client;
  return {
    client,
    echoPort: echo.address().port,
    outcomes,
    close: async () => {
      server.close();
      echo.close();
    },
  };
}

function open(r: Rig, dstPort: number, dstIp = '127.0.0.1'): Promise<UdpTunnelFlow> {
  const connId = { protocol: 17, srcIp: '198.18.0.1', srcPort: 40000, dstIp, dstPort };
  return openUdp(
    new TunnelStream(r.client.tunnel()),
    streamInfo({ connId, sessionId: 'test', dialTimeoutMs: 3000 }),
  );
}

function nextDatagram(flow: UdpTunnelFlow): Promise<string> {
  return new Promise((resolve) => {
    flow.onDatagram = (d) => resolve(d.toString());
  });
}

test('datagrams go out one per message and their answers come back', async () => {
  const r = await rig();
  try {
    const flow = await open(r, r.echoPort);
    for (const text of ['one', 'two', 'x'.repeat(60_000)]) {
      const answer = nextDatagram(flow);
      assert.ok(flow.send(Buffer.from(text)));
      assert.is(await answer, `echo:${text}`);
    }
    const closed = new Promise<string>((resolve) => {
      flow.onClose = resolve;
    });
    flow.close();
    assert.is(await closed, 'closed');
    const outcome = await r.outcomes[0]!;
    assert.equal(outcome, { kind: 'closed', datagramsIn: 3, datagramsOut: 3 });
  } finally {
    await r.close();
  }
});

test('a destination without a listener ends the flow (ICMP port unreachable becomes RESET)', async () => {
  const r = await rig();
  try {
    const spare = dgram.createSocket('udp4');
    await new Promise<void>((res) => spare.bind(0, '127.0.0.1', res));
    const deadPort = spare.address().port;
    spare.close();
    const flow = await open(r, deadPort);
    const closed = new Promise<string>((resolve) => {
      flow.onClose = resolve;
    });
    flow.send(Buffer.from('anyone?'));
    assert.match(await closed, /refused the datagram/);
    assert.is((await r.outcomes[0]!).kind, 'reset');
  } finally {
    await r.close();
  }
});

test('an idle flow is closed by the dialing side; an OPEN without a destination is rejected', async () => {
  const r = await rig(200);
  try {
    const flow = await open(r, r.echoPort);
    const closed = new Promise<string>((resolve) => {
      flow.onClose = resolve;
    });
    assert.is(await closed, 'closed by the far side');
    try {
      await open(r, 53, 'not-an-ip');
      assert.unreachable('an OPEN without an IP destination must be rejected');
    } catch (e) {
      assert.ok(e instanceof UdpDialRejected);
      assert.match((e as Error).message, /no IP destination/);
    }
  } finally {
    await r.close();
  }
});

test.run();
