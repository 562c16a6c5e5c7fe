// The manager as the far end of the workstation's VIF, over real gRPC on loopback: UDP flows dialed by the
// manager (one datagram per DATA), protocols the tunnel does not carry, and LookupDNS in standalone mode
// answered by a real DNS server (a zone server on loopback plays the cluster's DNS).
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../command/wait.js';
import { decodeMessage, TYPE } from '../dns/wire.js';
import { setLevel } from '../logging/logger.js';
import type { DNSResponse, SessionInfo, TunnelMessage } from '../rpc/gen/manager.js';
import { managerChannelOptions } from '../rpc/grpc-options.js';
import { ManagerClient } from '../rpc/manager-service.js';
import { unary } from '../rpc/unary-call.js';
import { startZoneServer } from '../testbed/zone-server.js';
import { msg, streamInfo, TunnelCode } from '../tunnel/messages.js';
import { startManager } from './server.js';

setLevel('error');

const clientInfo = { name: 'alice@laptop', installId: 'x', version: '0.1.0', namespace: '' };

async function rig(lostSessionLingerMs?: number) {
  const manager = await startManager({
    host: '127.0.0.1',
    port: 0,
    clientTtlMs: 15_000,
    agentTtlMs: 15_000,
    ...(lostSessionLingerMs !== undefined ? { lostSessionLingerMs } : {}),
  });
  const client = new ManagerClient(
    `127.0.0.1:${manager.port}`,
    grpc.credentials.createInsecure(),
    managerChannelOptions(),
  );
  const call = <Res>(start: Parameters<typeof unary<Res>>[0]) => unary<Res>(start, 5000);
  const alice = await call<SessionInfo>((md, o, cb) => client.arriveAsClient(clientInfo, md, o, cb));
  return {
    manager,
    client,
    call,
    sessionId: alice.sessionId,
    close: async () => {
      client.close();
      await manager.stop();
    },
  };
}

/** Opens a raw tunnel call with OPEN for conn; collects what comes back. */
function openRaw(client: ManagerClient, sessionId: string, conn: { protocol: number; port: number }) {
  const call = client.tunnel();
  const got: TunnelMessage[] = [];
  const waiters: Array<() => void> = [];
  call.on('data', (m: TunnelMessage) => {
    got.push(m);
    for (const w of waiters.splice(0)) w();
  });
  call.on('error', () => {});
  const connId = {
    protocol: conn.protocol,
    srcIp: '198.18.0.1',
    srcPort: 40000,
    dstIp: '127.0.0.1',
    dstPort: conn.port,
  };
  call.write(msg.open(streamInfo({ connId, sessionId })));
  const next = (code: TunnelCode) =>
    new Promise<TunnelMessage>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${TunnelCode[code]} within 5 s`)), 5000);
      const check = () => {
        const i = got.findIndex((m) => m.code === code);
        if (i >= 0) {
          clearTimeout(timer);
          resolve(got.splice(i, 1)[0]!);
        } else waiters.push(check);
      };
      check();
    });
  return { call, next };
}

test('a client UDP flow: the manager dials the destination and relays datagram by datagram', async () => {
  const r = await rig();
  const echo = dgram.createSocket('udp4');
  echo.on('message', (d, from) =>
    echo.send(Buffer.concat([Buffer.from('echo:'), d]), from.port, from.address),
  );
  await new Promise<void>((res) => echo.bind(0, '127.0.0.1', res));
  try {
    const flow = openRaw(r.client, r.sessionId, { protocol: 17, port: echo.address().port });
    await flow.next(TunnelCode.DIAL_OK);
    flow.call.write(msg.data(Buffer.from('one')));
    assert.is((await flow.next(TunnelCode.DATA)).data.toString(), 'echo:one');
    flow.call.write(msg.data(Buffer.from('two')));
    assert.is(
      (await flow.next(TunnelCode.DATA)).data.toString(),
      'echo:two',
      'each datagram stays one message',
    );
    flow.call.write(msg.closeSend());
    await flow.next(TunnelCode.CLOSE_SEND);
    flow.call.end();
  } finally {
    echo.close();
    await r.close();
  }
});

test('a protocol the tunnel does not carry is refused with the reason', async () => {
  const r = await rig();
  try {
    const flow = openRaw(r.client, r.sessionId, { protocol: 1, port: 7 });
    const m = await flow.next(TunnelCode.DIAL_REJECT);
    assert.match(m.error, /IP protocol 1 is not carried by the tunnel/);
    flow.call.end();
  } finally {
    await r.close();
  }
});

test('LookupDNS (standalone): a real query, so "no AAAA" is not "no such name", and TXT comes back whole', async () => {
  const r = await rig();
  const zone = await startZoneServer('127.0.0.1', 0, {
    'echo.default.svc.cluster.local.': { A: ['10.96.0.20'], TXT: ['hello'] },
  });
  let closed = false;
  r.manager.core.dnsServers = () => [{ address: '127.0.0.1', port: zone.port }];
  const lookup = (name: string, qtype: number) =>
    r.call<DNSResponse>((md, o, cb) =>
      r.client.lookupDns(
        { session: { sessionId: r.sessionId, remainIntervalMs: 0 }, name, qtype },
        md,
        o,
        cb,
      ),
    );
  try {
    const a = await lookup('echo.default.svc.cluster.local.', TYPE.A);
    assert.is(a.rcode, 0);
    assert.equal(a.ips, ['10.96.0.20']);
    assert.is(a.ttlSeconds, 30);
    const aaaa = await lookup('echo.default.svc.cluster.local', TYPE.AAAA);
    assert.is(aaaa.rcode, 0, 'the name exists: no AAAA is NOERROR with no records');
    assert.equal(aaaa.ips, []);
    assert.is((await lookup('nope.default.svc.cluster.local.', TYPE.A)).rcode, 3);
    const txt = await lookup('echo.default.svc.cluster.local.', TYPE.TXT);
    const answers = decodeMessage(Buffer.from(txt.raw)).answers;
    assert.is(answers.length, 1);
    assert.is(answers[0]!.data.subarray(1).toString(), 'hello');
    zone.close();
    closed = true;
    // No server answers: SERVFAIL, so the workstation's resolver says "try again", not "no such name".
    const down = await lookup('echo.default.svc.cluster.local.', TYPE.A);
    assert.is(down.rcode, 2);
  } finally {
    if (!closed) zone.close();
    await r.close();
  }
});

test("a client session lost (its user daemon died) still takes the workstation's flows and DNS lookups a while, nothing else; then it is unknown", async () => {
  const r = await rig(2_000);
  const zone = await startZoneServer('127.0.0.1', 0, {
    'echo.default.svc.cluster.local.': { A: ['10.96.0.20'] },
  });
  r.manager.core.dnsServers = () => [{ address: '127.0.0.1', port: zone.port }];
  const target = net.createServer((s) => {
    s.on('error', () => {});
    s.end('hi');
  });
  await new Promise<void>((res) => target.listen(0, '127.0.0.1', res));
  const port = (target.address() as net.AddressInfo).port;
  const info = { sessionId: r.sessionId, remainIntervalMs: 0 };
  const lookup = () =>
    r.call<DNSResponse>((md, o, cb) =>
      r.client.lookupDns(
        { session: info, name: 'echo.default.svc.cluster.local.', qtype: TYPE.A },
        md,
        o,
        cb,
      ),
    );
  const remain = () => r.call<unknown>((md, o, cb) => r.client.remain({ session: info }, md, o, cb));
  try {
    // The user daemon's dial stream closes: the manager declares its session lost at once.
    const dials = r.client.watchDial(info);
    dials.on('error', () => {});
    await new Promise((res) => setTimeout(res, 200));
    dials.cancel();
    await waitFor(
      'the session lost',
      () =>
        remain().then(
          () => undefined,
          () => true,
        ),
      5_000,
      50,
    );
    const flow = openRaw(r.client, r.sessionId, { protocol: 6, port });
    await flow.next(TunnelCode.DIAL_OK);
    flow.call.end();
    assert.equal((await lookup()).ips, ['10.96.0.20'], 'a DNS lookup of the lost session');
    // Past the linger: unknown, as a session that expired.
    await new Promise((res) => setTimeout(res, 2_100));
    const late = openRaw(r.client, r.sessionId, { protocol: 6, port });
    assert.match((await late.next(TunnelCode.DIAL_REJECT)).error, /is unknown to the traffic manager/);
    late.call.end();
    await lookup().then(
      () => assert.unreachable('a lookup of an unknown session was answered'),
      (e: Error) => assert.match(e.message, /is not known to the traffic manager/),
    );
  } finally {
    target.close();
    zone.close();
    await r.close();
  }
});

test.run();
