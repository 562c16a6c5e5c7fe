import * as crypto from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelCode, TunnelMessage } from './gen/manager.js';
import { frameOf } from './grpc-framing.js';
import {
  DataReader,
  dataWritten,
  deserializeTunnelMessage,
  encodedDataMessage,
  serializeTunnelMessage,
} from './tunnel-codec.js';

const base = (fields: Partial<TunnelMessage>): TunnelMessage => ({
  code: TunnelCode.TUNNEL_UNSPECIFIED,
  data: Buffer.alloc(0),
  open: undefined,
  error: '',
  ...fields,
});

const samples: TunnelMessage[] = [
  base({ code: TunnelCode.DATA, data: Buffer.from('hello') }),
  base({ code: TunnelCode.DATA, data: crypto.randomBytes(1 << 20) }),
  base({ code: TunnelCode.DATA, data: crypto.randomBytes(200) }),
  base({ data: Buffer.from('code zero') }),
  base({ code: TunnelCode.CLOSE_SEND }),
  base({ code: TunnelCode.RESET, error: 'connection reset: ünïcode' }),
  base({ code: TunnelCode.KEEPALIVE }),
  base({
    code: TunnelCode.OPEN,
    open: {
      version: 2,
      connId: { protocol: 6, srcIp: '10.0.0.1', srcPort: 40000, dstIp: '10.0.0.2', dstPort: 8080 },
      sessionId: 'a-1',
      dialTimeoutMs: 5000,
      idleTimeoutMs: 0,
      mount: true,
      mountReadWrite: true,
      interceptId: 'c-1:echo',
      relayId: '',
      credential: 'a-1.secret',
    },
  }),
  base({ code: 99 as TunnelCode, data: Buffer.from('unknown code') }),
];

test('the same bytes as the generated encoder', () => {
  for (const m of samples) {
    const generated = Buffer.from(TunnelMessage.encode(m).finish());
    assert.ok(serializeTunnelMessage(m).equals(generated), `code ${m.code}, ${m.data.length} data bytes`);
  }
});

test('decodes what the generated encoder wrote, and round-trips', () => {
  for (const m of samples) {
    const bytes = Buffer.from(TunnelMessage.encode(m).finish());
    const viaFast = deserializeTunnelMessage(bytes);
    assert.equal(viaFast, TunnelMessage.decode(bytes));
    assert.equal(deserializeTunnelMessage(serializeTunnelMessage(m)), TunnelMessage.decode(bytes));
  }
});

test('DATA is decoded without a copy', () => {
  const bytes = serializeTunnelMessage(base({ code: TunnelCode.DATA, data: Buffer.alloc(4096, 7) }));
  const m = deserializeTunnelMessage(bytes);
  assert.is(m.data.buffer, bytes.buffer);
});

test('a decoded DATA message forwarded unchanged reuses its bytes; a changed one is encoded anew', () => {
  const bytes = serializeTunnelMessage(base({ code: TunnelCode.DATA, data: Buffer.alloc(4096, 7) }));
  const m = deserializeTunnelMessage(bytes);
  assert.is(serializeTunnelMessage(m), bytes);
  const changed = { ...m, code: TunnelCode.KEEPALIVE };
  assert.is.not(serializeTunnelMessage(changed), bytes);
  m.data = Buffer.from('other');
  assert.ok(serializeTunnelMessage(m).equals(Buffer.from(TunnelMessage.encode(m).finish())));
});

test('a DATA message built from chunks encodes like the generated codec', () => {
  const chunks = [crypto.randomBytes(100), crypto.randomBytes(70_000), crypto.randomBytes(3)];
  const m = encodedDataMessage(chunks, 70_103);
  assert.ok(m.data.equals(Buffer.concat(chunks)));
  assert.ok(serializeTunnelMessage(m).equals(Buffer.from(TunnelMessage.encode(m).finish())));
});

test('unknown fields are skipped', () => {
  // Field 15 (varint) before DATA: a newer peer's addition.
  const extra = Buffer.concat([
    Buffer.from([15 << 3, 1]),
    serializeTunnelMessage(base({ code: TunnelCode.DATA, data: Buffer.from('x') })),
  ]);
  assert.is(deserializeTunnelMessage(extra).data.toString(), 'x');
});

/** A read as net's onread does it: into the memory last offered, at most all of it. */
function read(reader: DataReader, payload: Buffer): TunnelMessage {
  const into = reader.region();
  const n = Math.min(payload.length, into.length);
  into.set(payload.subarray(0, n));
  return reader.commit(n, into);
}

test('DataReader: each read is a DATA message encoded in place, its gRPC frame in front', () => {
  const reader = new DataReader(1 << 20);
  for (const n of [1, 127, 128, 300, 16_000, 70_000, 1 << 20]) {
    const payload = crypto.randomBytes(n);
    const m = read(reader, payload);
    assert.ok(m.data.equals(payload.subarray(0, m.data.length)));
    const bytes = serializeTunnelMessage(m);
    assert.ok(bytes.equals(Buffer.from(TunnelMessage.encode(m).finish())), `${n} bytes`);
    assert.is(bytes.buffer, m.data.buffer, 'no copy');
    const frame = frameOf(bytes)!;
    assert.ok(frame, 'the frame is registered');
    assert.is(frame[0], 0);
    assert.is(frame.readUInt32BE(1), bytes.length);
    assert.is(frame.byteOffset + 5, bytes.byteOffset);
  }
});

test('DataReader: small reads share an allocation, messages never overlap, memory grows with the reads', () => {
  const reader = new DataReader(1 << 20);
  const small = Array.from({ length: 50 }, (_, i) => read(reader, Buffer.alloc(100, i)));
  assert.is(new Set(small.map((m) => m.data.buffer)).size, 1, '50 small reads in one 16 KiB allocation');
  for (const [i, m] of small.entries()) assert.ok(m.data.equals(Buffer.alloc(100, i)), `message ${i} intact`);
  // Reads that fill what was offered: the next allocations grow, up to maxBytes a read.
  let offered = 0;
  for (let i = 0; i < 12; i++) {
    const into = reader.region();
    offered = into.length;
    reader.commit(into.length, into);
  }
  assert.is(offered, 1 << 20);
  const into = reader.region();
  assert.throws(() => reader.commit(1, Buffer.alloc(10)), /did not offer/);
  assert.ok(reader.commit(1, into));
});

test('DataReader: memory whose messages were all written serves later reads; memory with one unwritten does not', () => {
  const reader = new DataReader(1 << 20);
  const fill = () => {
    const into = reader.region();
    return reader.commit(into.length, into);
  };
  for (let i = 0; i < 8; i++) fill(); // grown to 1 MiB reads, one memory each
  const written = fill();
  dataWritten(written);
  // The next read needs new memory: the written message's is free again.
  const unwritten = fill();
  assert.is(unwritten.data.buffer, written.data.buffer, 'the written memory is reused');
  const later = Array.from({ length: 4 }, () => fill().data.buffer);
  assert.not.ok(later.includes(unwritten.data.buffer), 'memory with an unwritten message is not');
  assert.is(new Set(later).size, 4, 'nothing written: new memory each time');
});

test('a message reported written twice, or a copy of it reported too, returns its memory once', () => {
  const chunks = [Buffer.alloc(8000, 4)];
  const message = encodedDataMessage(chunks, 8000, true);
  const copy = { ...message };
  dataWritten(message);
  dataWritten(message);
  dataWritten(copy);
  const taken = [1, 2].map(() => encodedDataMessage([Buffer.alloc(8000, 5)], 8000, true).data.buffer);
  assert.is(taken[0], message.data.buffer, 'written: its memory is taken again');
  assert.is.not(taken[1], message.data.buffer, 'and only once');
});

test('encodedDataMessage with reuse: its memory serves the next such message once written, not before', () => {
  const chunks = [Buffer.alloc(3000, 1), Buffer.alloc(5000, 2)];
  const first = encodedDataMessage(chunks, 8000, true);
  const second = encodedDataMessage(chunks, 8000, true);
  assert.is.not(second.data.buffer, first.data.buffer, 'the first is not written yet');
  dataWritten(first);
  const third = encodedDataMessage([Buffer.alloc(8000, 3)], 8000, true);
  assert.is(third.data.buffer, first.data.buffer, 'written: its memory is taken again');
  assert.ok(third.data.equals(Buffer.alloc(8000, 3)));
  assert.equal(
    serializeTunnelMessage(third),
    serializeTunnelMessage(base({ code: TunnelCode.DATA, data: third.data })),
  );
  assert.ok(second.data.equals(Buffer.concat(chunks)), 'an unwritten message keeps its bytes');
  // Without reuse the memory stays the garbage collector's.
  const plain = encodedDataMessage(chunks, 8000);
  dataWritten(plain);
  assert.is.not(encodedDataMessage(chunks, 8000, true).data.buffer, plain.data.buffer);
});

test.run();
