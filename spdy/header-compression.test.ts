import * as zlib from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SPDY3_DICTIONARY } from './dictionary.js';
import { decodeHeaderBlock, encodeHeaderBlock } from './frames.js';
import { HeaderBlockDecoder, HeaderBlockEncoder } from './header-compression.js';

/** What a peer's zlib reader sees: one inflate context for the connection, read at each flush point. */
async function inflateAll(blocks: Buffer[]): Promise<Buffer[]> {
  const inflate = zlib.createInflate({ dictionary: SPDY3_DICTIONARY });
  const out: Buffer[] = [];
  let chunks: Buffer[] = [];
  inflate.on('data', (d: Buffer) => chunks.push(d));
  for (const b of blocks) {
    inflate.write(b);
    await new Promise<void>((resolve) => inflate.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
    out.push(Buffer.concat(chunks));
    chunks = [];
  }
  inflate.close();
  return out;
}

test('our header blocks decode one by one in a single zlib context, each at its flush point', async () => {
  const encoder = new HeaderBlockEncoder();
  const first = encoder.encode({});
  const second = encoder.encode({ 'x-stream-protocol-version': 'v4.channel.k8s.io' });
  // Each block ends with the sync-flush marker Go's flate reader needs to hand out the block.
  assert.equal([...first.subarray(-5)], [0, 0, 0, 0xff, 0xff]);
  const [a, b] = await inflateAll([first, second]);
  assert.equal(decodeHeaderBlock(a!), {});
  assert.equal(decodeHeaderBlock(b!), { 'x-stream-protocol-version': 'v4.channel.k8s.io' });
});

test('a header block larger than one stored deflate block still decodes', async () => {
  const encoder = new HeaderBlockEncoder();
  const big = 'x'.repeat(70_000);
  const [raw] = await inflateAll([encoder.encode({ big })]);
  assert.is(decodeHeaderBlock(raw!).big, big);
});

/** A peer like Go's spdystream: real deflate with the dictionary, sync flush per header block. */
async function peerBlocks(headerSets: Record<string, string>[]): Promise<Buffer[]> {
  const deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY });
  const blocks: Buffer[] = [];
  let chunks: Buffer[] = [];
  deflate.on('data', (d: Buffer) => chunks.push(d));
  for (const h of headerSets) {
    deflate.write(encodeHeaderBlock(h));
    await new Promise<void>((resolve) => deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
    blocks.push(Buffer.concat(chunks));
    chunks = [];
  }
  deflate.close();
  return blocks;
}

test("the peer's compressed blocks decode in order, sharing one context", async () => {
  const sets = [
    { streamtype: 'error', port: '80', requestid: '0' },
    { streamtype: 'data', port: '80', requestid: '0' },
    { streamtype: 'error', port: '80', requestid: '1' },
  ];
  const blocks = await peerBlocks(sets);
  const decoder = new HeaderBlockDecoder();
  // Decodes are queued: starting them all at once must keep their order.
  const decoded = await Promise.all(blocks.map((b) => decoder.decode(b)));
  decoder.close();
  assert.equal(decoded, sets);
});

test('garbage fails the decode (and every later one) instead of hanging', async () => {
  const decoder = new HeaderBlockDecoder();
  await assert.not.throws(async () => {});
  let failed = 0;
  for (const block of [Buffer.from('definitely not zlib'), Buffer.from([1, 2, 3])]) {
    try {
      await decoder.decode(block);
    } catch (err) {
      assert.match(String(err), /does not decompress/);
      failed++;
    }
  }
  decoder.close();
  assert.is(failed, 2);
});

test.run();
