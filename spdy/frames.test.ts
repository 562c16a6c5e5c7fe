import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SPDY3_DICTIONARY } from './dictionary.js';
import {
  decodeHeaderBlock,
  encodeControlFrame,
  encodeDataFrameHeader,
  encodeGoAway,
  encodeHeaderBlock,
  encodeRstStream,
  encodeSynStream,
  FLAG_FIN,
  FrameReader,
  FrameType,
  parseGoAway,
  parseRstStream,
  parseSynStream,
  SpdyProtocolError,
} from './frames.js';

function adler32(buf: Buffer): number {
  let a = 1;
  let b = 0;
  for (const byte of buf) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

test('the SPDY/3 dictionary is the one Go spdystream primes zlib with', () => {
  assert.is(SPDY3_DICTIONARY.length, 1423);
  // zlib identifies a preset dictionary by its Adler-32; Go's table has 0xe3c6a7c2.
  assert.is(adler32(SPDY3_DICTIONARY), 0xe3c6a7c2);
});

test('frames split across arbitrary chunk boundaries come out whole and in order', () => {
  const data = Buffer.from('hello, pod');
  const wire = Buffer.concat([
    encodeSynStream(1, 0, Buffer.from([1, 2, 3])),
    encodeDataFrameHeader(1, FLAG_FIN, data.length),
    data,
    encodeRstStream(3, 5),
  ]);
  for (const step of [1, 3, 7, wire.length]) {
    const reader = new FrameReader();
    const frames = [];
    for (let i = 0; i < wire.length; i += step) {
      reader.push(wire.subarray(i, i + step));
      for (let f = reader.next(); f; f = reader.next()) frames.push(f);
    }
    assert.is(frames.length, 3, `chunk size ${step}`);
    const [syn, dataFrame, rst] = frames;
    assert.ok(syn?.control && syn.type === FrameType.SynStream);
    if (syn?.control) assert.is(parseSynStream(syn.body).streamId, 1);
    assert.ok(dataFrame && !dataFrame.control);
    if (dataFrame && !dataFrame.control) {
      assert.is(dataFrame.streamId, 1);
      assert.is(dataFrame.flags, FLAG_FIN);
      assert.is(dataFrame.data.toString(), 'hello, pod');
    }
    if (rst?.control) assert.equal(parseRstStream(rst.body), { streamId: 3, status: 5 });
    assert.is(reader.buffered, 0);
  }
});

test('streamData: a DATA payload comes in pieces as it arrives, uncopied, FIN on the last piece only', () => {
  const data = Buffer.from('0123456789abcdefghij');
  const frames = Buffer.concat([
    encodeDataFrameHeader(3, 0, 0),
    encodeDataFrameHeader(3, FLAG_FIN, data.length),
    data,
    encodeGoAway(3, 0),
  ]);
  // The wire in a memory of its own, so a piece that is a view of it is recognisably not a copy.
  const memory = new ArrayBuffer(frames.length);
  const wire = Buffer.from(memory);
  frames.copy(wire);
  for (const step of [1, 5, 9, wire.length]) {
    const reader = new FrameReader({ streamData: true });
    const pieces: { flags: number; data: Buffer }[] = [];
    let goAway = false;
    for (let i = 0; i < wire.length; i += step) {
      reader.push(wire.subarray(i, i + step));
      for (let f = reader.next(); f; f = reader.next()) {
        if (f.control) goAway = f.type === FrameType.GoAway;
        else {
          assert.is(f.streamId, 3);
          pieces.push({ flags: f.flags, data: f.data });
        }
      }
    }
    assert.ok(goAway, `chunk size ${step}: the control frame after the data`);
    assert.is(pieces[0]!.data.length, 0, 'the empty frame');
    const payload = pieces.slice(1);
    assert.is(Buffer.concat(payload.map((p) => p.data)).toString(), data.toString());
    assert.equal(
      payload.map((p) => p.flags),
      payload.map((_, i) => (i === payload.length - 1 ? FLAG_FIN : 0)),
    );
    // Each piece is a view of a received chunk, not a copy.
    for (const p of payload) assert.ok(p.data.buffer === memory);
    assert.is(reader.buffered, 0);
  }
});

test('an incomplete frame waits for the rest', () => {
  const reader = new FrameReader();
  const frame = encodeGoAway(7, 0);
  reader.push(frame.subarray(0, 10));
  assert.is(reader.next(), undefined);
  reader.push(frame.subarray(10));
  const f = reader.next();
  assert.ok(f?.control);
  if (f?.control) assert.equal(parseGoAway(f.body), { lastGoodStreamId: 7, status: 0 });
});

test('control frames carry version 3, type, flags and a 24-bit length', () => {
  const f = encodeControlFrame(FrameType.Ping, 0, Buffer.from([0, 0, 0, 1]));
  assert.equal([...f.subarray(0, 8)], [0x80, 3, 0, 6, 0, 0, 0, 4]);
});

test('header blocks: lower-case names, values round-trip, malformed blocks are rejected', () => {
  const block = encodeHeaderBlock({ StreamType: 'data', port: '8080', requestid: '0' });
  assert.equal(decodeHeaderBlock(block), { streamtype: 'data', port: '8080', requestid: '0' });
  assert.throws(
    () => decodeHeaderBlock(block.subarray(0, block.length - 1)),
    (e: unknown) => e instanceof SpdyProtocolError,
  );
  assert.throws(() => decodeHeaderBlock(Buffer.from([0, 0])), /no entry count/);
  const huge = Buffer.from([0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
  assert.throws(() => decodeHeaderBlock(huge), /past the end/);
});

test.run();
