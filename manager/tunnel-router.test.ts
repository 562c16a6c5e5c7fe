// The router's wait for a stream's OPEN, through real gRPC on loopback: a stream that sends none is reset
// after the OPEN timeout; a spare of a live session whose credential it carries may wait longer and then
// carries a flow; a spare that proves nothing gets the short wait; a spare its client cancels is ended.
import * as net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../logging/logger.js';
import { AUTHORIZATION_METADATA } from '../rpc/call-credentials.js';
import { managerChannelOptions, managerServerOptions } from '../rpc/grpc-options.js';
import { ManagerClient, ManagerServiceDefinition } from '../rpc/manager-service.js';
import { codeName, msg, streamInfo, type TunnelMessage } from '../tunnel/messages.js';
import { SPARE_METADATA } from '../tunnel/spare-streams.js';
import { TunnelStream } from '../tunnel/stream.js';
import { InterceptTable } from './intercepts.js';
import { SessionRegistry } from './sessions.js';
import { TunnelRouter } from './tunnel-router.js';

const WINDOWS = { stream: 1 << 20, connection: 8 << 20 };
const OPEN_MS = 150;

async function rig() {
  const sessions = new SessionRegistry({ clientTtlMs: 60_000, agentTtlMs: 60_000 });
  const client = sessions.arriveClient({
    name: 'dev@ws',
    installId: 'i',
    version: 'test',
    namespace: 'default',
  });
  const router = new TunnelRouter(sessions, new InterceptTable(), createLogger('test'), () => undefined, {
    provesSession: (_s, md) => md.get(AUTHORIZATION_METADATA)[0] === 'Bearer good',
    openTimeoutMs: OPEN_MS,
    spareOpenTimeoutMs: 30_000,
  });
  const server = new grpc.Server(managerServerOptions());
  server.addService(ManagerServiceDefinition, {
    tunnel: (call: grpc.ServerDuplexStream<TunnelMessage, TunnelMessage>) => router.handle(call),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const manager = new ManagerClient(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
    managerChannelOptions(),
  );
  // The destination of the outbound flow a spare carries.
  const target = net.createServer((s) => {
    s.on('error', () => {});
    s.end('hello');
  });
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  const open = (md: Record<string, string>) => {
    const m = new grpc.Metadata();
    for (const [k, v] of Object.entries(md)) m.set(k, v);
    return TunnelStream.open(manager, WINDOWS, m);
  };
  return {
    sessionId: client.id,
    router,
    open,
    targetPort: (target.address() as net.AddressInfo).port,
    close() {
      manager.close();
      server.forceShutdown();
      target.close();
    },
  };
}

/** What the stream hears first: a message's code name, 'end', 'failure', or 'silence' after `ms`. */
function firstWord(stream: TunnelStream, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve('silence'), ms);
    const done = (w: string) => {
      clearTimeout(t);
      resolve(w);
    };
    stream.onMessage((m) => done(codeName(m.code)));
    stream.once('peer-end', () => done('end'));
    stream.once('failure', () => done('failure'));
  });
}

test('a stream without OPEN is reset after the OPEN timeout', async () => {
  const r = await rig();
  try {
    const s = r.open({});
    assert.is(await firstWord(s, 5 * OPEN_MS), 'RESET');
  } finally {
    r.close();
  }
});

test("a spare with its session's credential waits past the OPEN timeout, then carries a flow", async () => {
  const r = await rig();
  try {
    const s = r.open({ [SPARE_METADATA]: r.sessionId, [AUTHORIZATION_METADATA]: 'Bearer good' });
    assert.is(await firstWord(s, 4 * OPEN_MS), 'silence', 'still open after the OPEN timeout');
    const info = streamInfo({
      connId: { protocol: 6, srcIp: '127.0.0.1', srcPort: 1, dstIp: '127.0.0.1', dstPort: r.targetPort },
      sessionId: r.sessionId,
    });
    const answer = firstWord(s, 5_000);
    s.send(msg.open(info));
    assert.is(await answer, 'DIAL_OK', 'the manager dialed the destination for it');
    s.abort('done');
  } finally {
    r.close();
  }
});

test('a spare without the credential, or of an unknown session, gets the short wait', async () => {
  const r = await rig();
  try {
    const wrong = r.open({ [SPARE_METADATA]: r.sessionId, [AUTHORIZATION_METADATA]: 'Bearer bad' });
    const unknown = r.open({ [SPARE_METADATA]: 'c-nobody', [AUTHORIZATION_METADATA]: 'Bearer good' });
    assert.equal(await Promise.all([firstWord(wrong, 5 * OPEN_MS), firstWord(unknown, 5 * OPEN_MS)]), [
      'RESET',
      'RESET',
    ]);
  } finally {
    r.close();
  }
});

test('a spare its client cancels before OPEN is ended on the manager too', async () => {
  const r = await rig();
  try {
    const s = r.open({ [SPARE_METADATA]: r.sessionId, [AUTHORIZATION_METADATA]: 'Bearer good' });
    for (let i = 0; i < 100 && r.router.openStreams === 0; i++) await sleep(10);
    assert.is(r.router.openStreams, 1, 'the manager holds the spare');
    s.abort('no longer needed');
    for (let i = 0; i < 100 && r.router.openStreams > 0; i++) await sleep(10);
    assert.is(r.router.openStreams, 0, 'and lets it go');
  } finally {
    r.close();
  }
});

test.run();
