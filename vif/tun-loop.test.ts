// The packet loop's mechanics (tun-device.ts TunLoop, Waker, TunWriter) on a pipe, which reads and polls
// as a TUN fd does: a wake reaches the wake handler, data reaches the packet handler as a view, the end of
// the fd or a bad fd is reported once and the loop goes on waking until stopped. The TUN itself, with
// the NAT and the kernel's TCP, is covered by the root daemon's netns tests.
import koffi from 'koffi';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TunLoop, type TunLoopHandlers, TunWriter, Waker } from './tun-device.js';

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const lib = koffi.load('libc.so.6');
const pipe2 = lib.func('int pipe2(int *fds, int flags)') as (fds: Int32Array, flags: number) => number;
const write = lib.func('long write(int fd, const void *buf, size_t count)') as (
  fd: number,
  buf: Uint8Array,
  count: number,
) => number;
const close = lib.func('int close(int fd)') as (fd: number) => number;

function pipe(): { read: number; write: number } {
  const fds = new Int32Array(2);
  assert.is(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0, 'pipe2');
  return { read: fds[0]!, write: fds[1]! };
}

/** Runs a loop on `fd` until a handler stops it; returns what the handlers saw. */
function runLoop(
  fd: number,
  waker: Waker,
  on: (loop: TunLoop, seen: Seen) => Partial<TunLoopHandlers>,
): Seen {
  const seen: Seen = { packets: [], wakes: 0, ticks: 0, errors: [] };
  let loop: TunLoop | undefined;
  const handlers = (l: TunLoop) => on(l, seen);
  const record: TunLoopHandlers = {
    packet: (p) => {
      seen.packets.push(Buffer.from(p).toString());
      handlers(loop!).packet?.(p);
    },
    wake: () => {
      seen.wakes++;
      handlers(loop!).wake?.();
    },
    tick: () => {
      seen.ticks++;
      handlers(loop!).tick?.();
    },
    error: (e) => {
      seen.errors.push(e.message);
      handlers(loop!).error?.(e);
    },
  };
  loop = new TunLoop(fd, waker.fd, record);
  loop.run();
  seen.loopPackets = loop.packets;
  return seen;
}

interface Seen {
  packets: string[];
  wakes: number;
  ticks: number;
  errors: string[];
  loopPackets?: number;
}

test('a packet reaches the packet handler, a wake the wake handler, and stop() ends run()', () => {
  const p = pipe();
  const waker = new Waker();
  try {
    write(p.write, Buffer.from('packet one'), 10);
    const seen = runLoop(p.read, waker, (loop) => ({
      // As the main thread does after posting a message.
      packet: () => waker.wake(),
      wake: () => loop.stop(),
    }));
    assert.equal(seen.packets, ['packet one']);
    assert.is(seen.wakes, 1);
    assert.is(seen.loopPackets, 1);
    assert.equal(seen.errors, []);
  } finally {
    close(p.read);
    close(p.write);
    waker.close();
  }
});

test('the loop ticks while nothing arrives, so its timers run on an idle device', () => {
  const p = pipe();
  const waker = new Waker();
  try {
    const seen = runLoop(p.read, waker, (loop, s) => ({
      tick: () => {
        if (s.ticks === 2) loop.stop();
      },
    }));
    assert.is(seen.ticks, 2);
    assert.equal(seen.packets, []);
    assert.is(seen.wakes, 0);
  } finally {
    close(p.read);
    close(p.write);
    waker.close();
  }
});

test('the end of the device is reported once; the loop stops reading it and still wakes', () => {
  const p = pipe();
  const waker = new Waker();
  try {
    close(p.write);
    const seen = runLoop(p.read, waker, (loop) => ({
      error: () => waker.wake(),
      wake: () => loop.stop(),
    }));
    assert.equal(seen.errors, ['the TUN device was closed']);
    assert.is(seen.wakes, 1);
  } finally {
    close(p.read);
    waker.close();
  }
});

test('a bad fd is reported with the reason', () => {
  const waker = new Waker();
  try {
    const seen = runLoop(1_000_000, waker, (loop) => ({
      error: () => waker.wake(),
      wake: () => loop.stop(),
    }));
    assert.equal(seen.errors, ['reading the TUN device failed: Bad file descriptor']);
  } finally {
    waker.close();
  }
});

test('a write the kernel refuses counts as an error with its reason; after stop() nothing is written', () => {
  const p = pipe();
  try {
    const writer = new TunWriter(p.read); // the read end of a pipe refuses writes
    assert.is(writer.write(Buffer.from('x')), false);
    assert.is(writer.errors, 1);
    assert.is(writer.lastError, 'Bad file descriptor');
    const good = new TunWriter(p.write);
    assert.is(good.write(Buffer.from('abc'), 2), true);
    assert.is(good.packets, 1);
    good.stop();
    assert.is(good.write(Buffer.from('abc')), false);
    assert.is(good.errors, 0);
  } finally {
    close(p.read);
    close(p.write);
  }
});

test.run();
