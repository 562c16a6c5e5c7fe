import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../../../logging/logger.js';
import { RstStatus } from '../../../spdy/frames.js';
import { SpdyTestClient } from '../test/spdy-client.js';
import { SpdySession, type SpdyStream } from './spdy-session.js';

const log = createLogger('test');

/** A SPDY server session and a test client over real loopback TCP. */
async function pair(onStream: (s: SpdyStream, session: SpdySession) => void) {
  let session!: SpdySession;
  const server = net.createServer((socket) => {
    session = new SpdySession(socket, { log, maxDataFrame: 1000 });
    session.on('stream', (s) => onStream(s, session));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const client = new SpdyTestClient(socket);
  return {
    client,
    session: () => session,
    close: () => {
      client.destroy();
      server.close();
    },
  };
}

test('a stream is accepted with its headers, echoes data and half-closes with FIN', async () => {
  const seen: Record<string, string>[] = [];
  const p = await pair((s) => {
    seen.push(s.headers);
    s.pipe(s); // echo; our end follows the client's FIN
  });
  try {
    const s = await p.client.openStream({ streamtype: 'data', port: '80' });
    const big = Buffer.alloc(5000, 7); // larger than maxDataFrame: several DATA frames
    s.write(big);
    s.write('tail');
    s.end();
    await s.closed();
    assert.ok(s.replied, 'SYN_REPLY came first');
    assert.equal(seen, [{ streamtype: 'data', port: '80' }]);
    assert.is(Buffer.concat(s.chunks).length, 5004);
    assert.is(s.resetStatus, undefined);
    assert.is(p.session().streamCount, 0, 'a stream finished both ways is forgotten');
  } finally {
    p.close();
  }
});

test('many streams on one connection keep their headers apart (shared zlib context)', async () => {
  const p = await pair((s) => s.end(`you are ${s.headers.requestid}`));
  try {
    const streams = await Promise.all(
      Array.from({ length: 20 }, (_, i) => p.client.openStream({ streamtype: 'data', requestid: String(i) })),
    );
    await Promise.all(streams.map((s) => s.closed()));
    for (const [i, s] of streams.entries()) assert.is(s.text, `you are ${i}`);
  } finally {
    p.close();
  }
});

test('reset by the server is an RST_STREAM; reset by the client destroys the server stream', async () => {
  let serverStream: SpdyStream | undefined;
  const p = await pair((s) => {
    if (s.headers.kind === 'reject') s.reset(RstStatus.RefusedStream);
    else serverStream = s;
  });
  try {
    const rejected = await p.client.openStream({ kind: 'reject' });
    await rejected.closed();
    assert.is(rejected.resetStatus, RstStatus.RefusedStream);
    assert.not.ok(rejected.replied, 'a rejected stream gets no SYN_REPLY');

    const kept = await p.client.openStream({ kind: 'keep' });
    await kept.until(() => kept.replied);
    const closed = new Promise((resolve) => serverStream!.once('close', resolve));
    p.client.sendRst(kept.id);
    await closed;
    assert.ok(serverStream!.isReset);
  } finally {
    p.close();
  }
});

test('client pings are echoed; close() sends GOAWAY and ends the connection', async () => {
  const p = await pair(() => {});
  try {
    const s = await p.client.openStream({});
    await s.until(() => s.replied);
    p.client.ping(1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(p.client.pings, [1]);
    p.session().close();
    await p.client.whenClosed();
    assert.equal(p.client.goAway, { lastGoodStreamId: 1 });
  } finally {
    p.close();
  }
});

test('a slow reader pauses the connection instead of buffering without bound', async () => {
  let serverStream: SpdyStream | undefined;
  let session: SpdySession | undefined;
  const p = await pair((s, sess) => {
    serverStream = s;
    session = sess;
    s.pause();
  });
  try {
    const s = await p.client.openStream({});
    await s.until(() => s.replied);
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < 16; i++) s.write(chunk); // 1 MiB against a 256 KiB stream buffer
    s.end();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(serverStream!.readableLength <= 512 * 1024, `buffered ${serverStream!.readableLength}`);
    let total = 0;
    serverStream!.on('data', (d: Buffer) => {
      total += d.length;
    });
    serverStream!.resume(); // explicitly paused streams do not resume on a new 'data' listener
    await new Promise((resolve) => serverStream!.once('end', resolve));
    assert.is(total, 16 * 64 * 1024);
    assert.ok(session);
  } finally {
    p.close();
  }
});

test.run();
