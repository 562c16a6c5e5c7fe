// The router's wait for a stream's OPEN, through real gRPC on loopback: a stream that sends none is reset
// after the OPEN timeout, and one its client cancels before OPEN is let go on the manager's side too (it was
// left half open before: a call object on each side for good).
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../logging/logger.js';
import { managerChannelOptions, managerServerOptions } from '../rpc/grpc-options.js';
import { startTunnelServer } from '../testbed/echo-tunnel.js';
import { codeName } from '../tunnel/messages.js';
import { TunnelStream } from '../tunnel/stream.js';
import { InterceptTable } from './intercepts.js';
import { SessionRegistry } from './sessions.js';
import { TunnelRouter } from './tunnel-router.js';

const WINDOWS = { stream: 1 << 20, connection: 8 << 20 };
const OPEN_MS = 150;

async function rig() {
  const sessions = new SessionRegistry({ clientTtlMs: 60_000, agentTtlMs: 60_000 });
  const router = new TunnelRouter(sessions, new InterceptTable(), createLogger('test'), () => undefined, {
    openTimeoutMs: OPEN_MS,
  });
  const { client: manager, close } = await startTunnelServer(
    (call) => router.handle(call),
    managerServerOptions(),
    managerChannelOptions(),
  );
  return {
    router,
    open: () => TunnelStream.open(manager, WINDOWS),
    close,
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

test('a stream without OPEN is reset after the OPEN timeout, and let go', async () => {
  const r = await rig();
  try {
    const s = r.open();
    assert.is(await firstWord(s, 10 * OPEN_MS), 'RESET');
    for (let i = 0; i < 100 && r.router.openStreams > 0; i++) await sleep(10);
    assert.is(r.router.openStreams, 0);
  } finally {
    r.close();
  }
});

test('a stream its client ends or cancels before OPEN is ended on the manager too', async () => {
  const r = await rig();
  try {
    for (const how of ['end', 'cancel'] as const) {
      const s = r.open();
      for (let i = 0; i < 100 && r.router.openStreams === 0; i++) await sleep(10);
      assert.is(r.router.openStreams, 1, `the manager holds the stream (${how})`);
      const heard = firstWord(s, 5 * OPEN_MS);
      if (how === 'end') s.end();
      else s.abort('no longer needed');
      if (how === 'end') assert.is(await heard, 'end', 'the manager ended its side at once');
      for (let i = 0; i < 100 && r.router.openStreams > 0; i++) await sleep(10);
      assert.is(r.router.openStreams, 0, `and let it go (${how})`);
    }
  } finally {
    r.close();
  }
});

test.run();
