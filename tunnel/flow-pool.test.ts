// FlowConnectionPool on real TCP connections on loopback: the connections a flow takes, hands back, and
// the ones it must not be given (ended by the far side, idle too long, the pool closed).
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../logging/logger.js';
import { connectFlowSocket, FlowConnectionPool } from './flow-pool.js';
import { FLOW_MAGIC } from './framed-call.js';

setLevel('error');

/** A far side that records each connection (after its magic) and can write to or end it. */
async function farSide() {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.once('data', (d) => {
      if (d.subarray(0, FLOW_MAGIC.length).equals(FLOW_MAGIC)) accepted.push(s);
      else s.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  let connects = 0;
  const pool = (o: { maxIdleMs?: number; spare?: boolean } = {}) =>
    new FlowConnectionPool({
      connect: () => {
        connects++;
        return connectFlowSocket('127.0.0.1', port);
      },
      what: 'the test',
      log: createLogger('test'),
      ...o,
    });
  return {
    accepted,
    pool,
    connects: () => connects,
    close: () => {
      for (const s of accepted) s.destroy();
      server.close();
    },
  };
}

const until = async (what: string, ok: () => boolean) => {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!ok()) throw new Error(`timed out waiting for ${what}`);
};

test('a connection handed back carries the next flow; bytes that came meanwhile are read first', async () => {
  const far = await farSide();
  const pool = far.pool({ spare: false });
  try {
    const first = await pool.open();
    assert.is(first.waited, false);
    pool.release(first.connection);
    await until('the far side to see the connection', () => far.accepted.length === 1);
    // A late frame of the flow before arrives while the connection waits.
    far.accepted[0]!.write('late');
    await new Promise((r) => setTimeout(r, 50));
    const second = await pool.open();
    assert.is(second.connection, first.connection);
    assert.is(second.waited, true);
    // The pool hands it out paused, as a flow's call expects (FramedCall resumes it).
    const got = new Promise<string>((r) => second.connection.once('data', (d) => r(String(d))));
    second.connection.resume();
    assert.is(await got, 'late');
    assert.is(far.connects(), 1);
    second.connection.destroy();
  } finally {
    pool.close();
    far.close();
  }
});

test('one connection is kept ready ahead of need, and replaced once taken', async () => {
  const far = await farSide();
  const pool = far.pool();
  try {
    pool.warm();
    await until('the spare', () => pool.readyCount === 1);
    const taken = await pool.open();
    assert.is(taken.waited, true);
    await until('a new spare', () => pool.readyCount === 1);
    assert.is(far.connects(), 2);
    taken.connection.destroy();
  } finally {
    pool.close();
    far.close();
  }
});

test('a ready connection its far side ended is dropped, not handed out', async () => {
  const far = await farSide();
  const pool = far.pool({ spare: false });
  try {
    const { connection } = await pool.open();
    pool.release(connection);
    await until('the far side to see the connection', () => far.accepted.length === 1);
    far.accepted[0]!.end();
    await until('the pool to drop it', () => pool.readyCount === 0);
    assert.ok(connection.destroyed);
    const next = await pool.open();
    assert.is.not(next.connection, connection);
    assert.is(next.waited, false);
    next.connection.destroy();
  } finally {
    pool.close();
    far.close();
  }
});

test('a ready connection unused for maxIdleMs is closed; close() closes the rest and refuses new ones', async () => {
  const far = await farSide();
  const pool = far.pool({ spare: false, maxIdleMs: 50 });
  try {
    const a = await pool.open();
    pool.release(a.connection);
    await until('the idle one to go', () => a.connection.destroyed);
    assert.is(pool.readyCount, 0);
    const b = await pool.open();
    pool.release(b.connection);
    pool.close();
    assert.ok(b.connection.destroyed);
    try {
      await pool.open();
      assert.unreachable('a closed pool opens nothing');
    } catch (e) {
      assert.match((e as Error).message, 'were closed');
    }
  } finally {
    far.close();
  }
});

test.run();
