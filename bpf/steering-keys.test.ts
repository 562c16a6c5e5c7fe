import * as os from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodePortKey,
  decodeStats,
  encodePortKey,
  encodeSocketFd,
  MAP_LAYOUT,
  pinDirFor,
  STATS_SIZE,
} from './steering-keys.js';

test('a port key is a __u16 in host byte order, like sk_lookup local_port', () => {
  const key = encodePortKey(8080);
  assert.is(key.length, 2);
  if (os.endianness() === 'LE') assert.equal([...key], [0x90, 0x1f]);
  else assert.equal([...key], [0x1f, 0x90]);
  for (const port of [1, 80, 8080, 65535]) assert.is(decodePortKey(encodePortKey(port)), port);
});

test('a port key refuses what is not a port', () => {
  for (const bad of [0, 65536, -1, 80.5, Number.NaN]) {
    assert.throws(() => encodePortKey(bad), /out of range/);
  }
  assert.throws(() => decodePortKey(Buffer.alloc(4)), /2 bytes/);
});

test('struct tp_port_stats decodes field by field', () => {
  const raw = Buffer.alloc(STATS_SIZE);
  const write = (i: number, v: bigint) =>
    os.endianness() === 'LE' ? raw.writeBigUInt64LE(v, i * 8) : raw.writeBigUInt64BE(v, i * 8);
  write(0, 7n);
  write(1, 3n);
  write(2, 2n);
  write(3, 2n ** 40n);
  assert.equal(decodeStats(raw), { steered: 7n, noListener: 3n, local: 2n, assignFailed: 2n ** 40n });
  assert.throws(() => decodeStats(Buffer.alloc(STATS_SIZE - 8)), /32 bytes/);
});

test('the SOCKHASH value is the socket fd as a __u64; the layout matches the C maps', () => {
  const v = encodeSocketFd(23);
  assert.is(v.length, MAP_LAYOUT.tp_listeners.valueSize);
  assert.is(os.endianness() === 'LE' ? v.readBigUInt64LE() : v.readBigUInt64BE(), 23n);
  assert.throws(() => encodeSocketFd(-1), /invalid socket/);
  assert.is(MAP_LAYOUT.tp_stats.valueSize, STATS_SIZE);
  assert.is(pinDirFor(4026532177, '/sys/fs/bpf/tp'), '/sys/fs/bpf/tp/4026532177');
});

test.run();
