// ReadSwitch on real loopback TCP: a socket created with it reads as usual until a target takes its reads,
// the target gets each read in the memory it offered, and reads go back to the socket's stream when the
// target lets go; no byte is lost or reordered across a switch (the read in flight at a switch lands in the
// memory the previous owner offered and is moved).
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { Writable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../command/wait.js';
import type { OnRead } from './dial.js';
import { ReadSwitch } from './read-switch.js';

const MiB = 1 << 20;

/** Loopback: `ours` is created with the switch (paused, as the agent creates it), `theirs` is the peer. */
async function pair(reads: ReadSwitch): Promise<{ ours: net.Socket; theirs: net.Socket; close(): void }> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const ours = net.connect({
    port: (server.address() as net.AddressInfo).port,
    host: '127.0.0.1',
    allowHalfOpen: true,
    onread: reads,
  });
  ours.pause();
  reads.attach(ours);
  await new Promise<void>((resolve, reject) => {
    ours.once('connect', resolve);
    ours.once('error', reject);
  });
  const theirs = await accepted;
  server.close();
  return {
    ours,
    theirs,
    close: () => {
      ours.destroy();
      theirs.destroy();
    },
  };
}

/** A target as a flow is: offers memory of its own, keeps copies of what it is handed. */
function collector(size = 32 << 10) {
  const got: Buffer[] = [];
  let offered: Uint8Array | undefined;
  let foreign = 0;
  const target: OnRead = {
    buffer: () => {
      offered = new Uint8Array(size);
      return offered;
    },
    callback: (bytes, into) => {
      if (into !== offered) foreign++;
      got.push(Buffer.from(into.subarray(0, bytes)));
      return true;
    },
  };
  return { target, got, bytes: () => got.reduce((n, b) => n + b.length, 0), foreign: () => foreign };
}

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

/** Writes `data` in pieces of `piece` bytes, waiting `gapMs` between them, then ends. */
async function writeSlowly(s: net.Socket, data: Buffer, piece: number, gapMs: number): Promise<void> {
  for (let at = 0; at < data.length; at += piece) {
    if (!s.write(data.subarray(at, at + piece))) await new Promise((r) => s.once('drain', r));
    await new Promise((r) => setTimeout(r, gapMs));
  }
  s.end();
}

test('without a target, reads reach the stream: 8 MiB piped to a slow reader arrive whole, in order', async () => {
  const reads = new ReadSwitch();
  const p = await pair(reads);
  const data = crypto.randomBytes(8 * MiB);
  try {
    // The peer echoes what it reads back through `ours`' pipe: backpressure must pause and resume reading.
    const echoed: Buffer[] = [];
    const done = new Promise<void>((resolve, reject) => {
      p.theirs.on('data', (c: Buffer) => echoed.push(c));
      p.theirs.on('end', resolve);
      p.theirs.on('error', reject);
    });
    const slow = new Writable({
      highWaterMark: 16 << 10,
      write(chunk: Buffer, _enc, cb) {
        setImmediate(() => (p.ours.write(chunk) ? cb() : p.ours.once('drain', () => cb())));
      },
      final(cb) {
        p.ours.end();
        cb();
      },
    });
    p.ours.pipe(slow);
    p.theirs.end(data);
    await done;
    assert.is(sha(Buffer.concat(echoed)), sha(data));
  } finally {
    p.close();
  }
});

test('a target gets every read in the memory it offered; the stream gets none', async () => {
  const reads = new ReadSwitch();
  const p = await pair(reads);
  const c = collector();
  let streamed = 0;
  p.ours.on('data', (b: Buffer) => {
    streamed += b.length;
  });
  const ended = new Promise<void>((r) => p.ours.once('end', r));
  reads.to(c.target);
  p.ours.resume();
  const data = crypto.randomBytes(2 * MiB);
  try {
    p.theirs.end(data);
    await ended;
    assert.is(streamed, 0);
    assert.is(sha(Buffer.concat(c.got)), sha(data));
    // The one read in flight when the target took over landed in the shared memory and was moved; every
    // later one in the target's own.
    assert.ok(c.foreign() === 0, `${c.foreign()} reads in memory the target did not offer`);
  } finally {
    p.close();
  }
});

test('switching in the middle of a stream, both ways, loses and reorders nothing', async () => {
  const reads = new ReadSwitch();
  const p = await pair(reads);
  const data = crypto.randomBytes(4 * MiB);
  const streamed: Buffer[] = [];
  p.ours.on('data', (b: Buffer) => streamed.push(b));
  const ended = new Promise<void>((r) => p.ours.once('end', r));
  p.ours.resume();
  const first = collector();
  const second = collector(8 << 10);
  // The stream's part, the first target's, the stream's again, the second target's to the end: reads in
  // flight at each switch go where reads go now.
  try {
    const writing = writeSlowly(p.theirs, data, 64 << 10, 1);
    const streamedBytes = () => streamed.reduce((n, b) => n + b.length, 0);
    await waitFor('the stream to read 512 KiB', () => streamedBytes() >= 512 << 10, 10_000, 1);
    const cut1 = streamed.length;
    reads.to(first.target);
    await waitFor('the first target to read 1 MiB', () => first.bytes() >= MiB, 10_000, 1);
    reads.to(undefined);
    assert.is(streamed.length, cut1, 'the stream read nothing while the first target held the reads');
    await waitFor('the stream to read again', () => streamed.length > cut1 + 4, 10_000, 1);
    const cut2 = streamed.length;
    reads.to(second.target);
    await writing;
    await ended;
    const parts = [streamed.slice(0, cut1), first.got, streamed.slice(cut1, cut2), second.got];
    assert.is(streamed.length, cut2, 'the stream read nothing while the second target held the reads');
    const whole = Buffer.concat(parts.flat());
    assert.is(whole.length, data.length);
    assert.is(sha(whole), sha(data));
  } finally {
    p.close();
  }
});

test.run();
