// Spare tunnel streams against a real gRPC server on loopback: a new flow takes a call that was started
// ahead, spares are replaced after use and when old, and never cross channels or sessions.
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { managerChannelOptions, managerServerOptions } from '../rpc/grpc-options.js';
import { startEchoTunnel, type TunnelCall } from '../testbed/echo-tunnel.js';
import { msg } from './messages.js';
import { SPARE_METADATA, SpareStreams } from './spare-streams.js';
import type { TunnelStream } from './stream.js';

const WINDOWS = { stream: 1 << 20, connection: 8 << 20 };
const turn = () => new Promise((r) => setImmediate(r));

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await sleep(10);
  assert.ok(check(), what);
}

const spareOf = (call: TunnelCall) => call.metadata.get(SPARE_METADATA)[0];

/** Sends KEEPALIVE on `stream` and waits for the server's echo of it. */
function echoes(stream: TunnelStream): Promise<boolean> {
  return new Promise((resolve) => {
    stream.onMessage((m) => resolve(m.code === msg.keepalive().code));
    stream.send(msg.keepalive());
  });
}

test('a flow takes a spare started ahead; the spares are made again after it', async () => {
  const echo = await startEchoTunnel(managerServerOptions(), managerChannelOptions());
  const spares = new SpareStreams(WINDOWS, { spares: 2 });
  try {
    const first = spares.take(echo.client, 's1');
    assert.ok(await echoes(first), 'the first flow, on a new call, works');
    await until('two spares are ready', () => spares.ready === 2);
    await until('the server has all three calls', () => echo.calls.length === 3);
    assert.equal(echo.calls.map(spareOf).sort(), ['s1', 's1', undefined], 'spares name their session');

    const second = spares.take(echo.client, 's1');
    assert.is(echo.calls.length, 3, 'no new call on the critical path');
    assert.ok(await echoes(second), 'the spare carries the flow');
    await until('the pool is full again', () => spares.ready === 2 && echo.calls.length === 4);
  } finally {
    spares.close();
    echo.close();
  }
});

test('spares of another session or channel are cancelled, not handed out', async () => {
  const echo = await startEchoTunnel(managerServerOptions(), managerChannelOptions());
  const other = await startEchoTunnel(managerServerOptions(), managerChannelOptions());
  const spares = new SpareStreams(WINDOWS, { spares: 2 });
  try {
    spares.take(echo.client, 'old-session');
    await until('spares of the old session', () => spares.ready === 2);
    await until('both reached the server', () => echo.calls.filter((c) => spareOf(c)).length === 2);
    const cancelled: string[] = [];
    for (const c of echo.calls.filter((c) => spareOf(c) === 'old-session'))
      c.on('cancelled', () => cancelled.push('x'));

    const flow = spares.take(echo.client, 'new-session');
    assert.ok(await echoes(flow));
    await until('the old spares were cancelled', () => cancelled.length === 2);
    await until('new spares for the new session', () => spares.ready === 2);
    await until(
      'the new spares reached the server',
      () => echo.calls.filter((c) => spareOf(c) === 'new-session').length === 2,
    );

    const elsewhere = spares.take(other.client, 'new-session');
    assert.ok(await echoes(elsewhere), 'a flow on the other channel works');
    assert.ok(
      other.calls.some((c) => spareOf(c) === undefined),
      "the other channel's flow is a new call there",
    );
  } finally {
    spares.close();
    echo.close();
    other.close();
  }
});

test('a spare the server ends is dropped and not replaced until the next flow', async () => {
  const echo = await startEchoTunnel(managerServerOptions(), managerChannelOptions());
  const spares = new SpareStreams(WINDOWS, { spares: 1 });
  try {
    spares.take(echo.client, 's');
    await until('one spare', () => spares.ready === 1 && echo.calls.length === 2);
    echo.calls.find((c) => spareOf(c) === 's')!.end();
    await until('the ended spare is dropped', () => spares.ready === 0);
    await sleep(50);
    assert.is(
      echo.calls.length,
      2,
      'no new call while no flow comes (no loop against a manager that refuses)',
    );
    const flow = spares.take(echo.client, 's');
    assert.ok(await echoes(flow), 'the next flow opens its own call');
    await until('and a spare is made again', () => spares.ready === 1);
  } finally {
    spares.close();
    echo.close();
  }
});

test('an old spare is cancelled and replaced; close() cancels all and makes no more', async () => {
  const echo = await startEchoTunnel(managerServerOptions(), managerChannelOptions());
  const spares = new SpareStreams(WINDOWS, { spares: 1, maxAgeMs: 100 });
  try {
    spares.take(echo.client, 's');
    await until('one spare', () => echo.calls.length === 2);
    let cancelled = false;
    echo.calls
      .find((c) => spareOf(c) === 's')!
      .on('cancelled', () => {
        cancelled = true;
      });
    await until('the old spare was cancelled', () => cancelled);
    await until('and replaced', () => echo.calls.length >= 3 && spares.ready === 1);

    spares.close();
    assert.is(spares.ready, 0);
    const flow = spares.take(echo.client, 's');
    assert.ok(await echoes(flow), 'a flow after close() still gets a stream');
    await turn();
    await sleep(20);
    assert.is(spares.ready, 0, 'but no spares are made');
  } finally {
    spares.close();
    echo.close();
  }
});

test.run();
