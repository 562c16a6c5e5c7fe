// SPDY/3 header blocks are zlib-compressed with one context per direction for the whole connection,
// primed with the SPDY/3 dictionary. Every block must end at a flush point, or the peer cannot decode
// it before the next one arrives.
import * as zlib from 'node:zlib';
import { SPDY3_DICTIONARY } from './dictionary.js';
import { decodeHeaderBlock, encodeHeaderBlock, type HeaderMap, SpdyProtocolError } from './frames.js';

const ZLIB_HEADER_NO_DICTIONARY = Buffer.from([0x78, 0x01]);
/** An empty stored block: what zlib's Z_SYNC_FLUSH emits. */
const SYNC_FLUSH_MARKER = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);
const MAX_STORED_BLOCK = 0xffff;

/**
 * Our direction: header blocks as stored (uncompressed) deflate blocks of one endless zlib stream.
 * Any zlib reader accepts that, Go's included, and it needs no compression state of its own. Each
 * block ends with the sync-flush marker: Go's flate reader only hands out data at such a point; without
 * it the reader runs past the frame and the connection's decompressor is dead from then on.
 */
export class HeaderBlockEncoder {
  private started = false;

  encode(headers: HeaderMap): Buffer {
    const raw = encodeHeaderBlock(headers);
    const out: Buffer[] = [];
    if (!this.started) {
      out.push(ZLIB_HEADER_NO_DICTIONARY);
      this.started = true;
    }
    for (let offset = 0; offset < raw.length; offset += MAX_STORED_BLOCK) {
      const chunk = raw.subarray(offset, offset + MAX_STORED_BLOCK);
      const blockHeader = Buffer.alloc(5);
      blockHeader[0] = 0x00; // BFINAL=0, BTYPE=00 (stored)
      blockHeader.writeUInt16LE(chunk.length, 1);
      blockHeader.writeUInt16LE(~chunk.length & 0xffff, 3);
      out.push(blockHeader, chunk);
    }
    out.push(SYNC_FLUSH_MARKER);
    return Buffer.concat(out);
  }
}

/**
 * The peer's direction: one persistent inflate context primed with the dictionary. Node has no
 * synchronous streaming inflate, so decoding is asynchronous; calls are queued and resolve in order,
 * which keeps the shared context in step with the frames.
 */
export class HeaderBlockDecoder {
  private readonly inflate = zlib.createInflate({ dictionary: SPDY3_DICTIONARY });
  private output: Buffer[] = [];
  private failure: Error | undefined;
  private rejectPending: ((err: Error) => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor() {
    this.inflate.on('data', (chunk: Buffer) => this.output.push(chunk));
    this.inflate.on('error', (err: Error) => {
      this.failure = new SpdyProtocolError(`header block does not decompress: ${err.message}`);
      // A failed inflate stream never calls the flush callback.
      this.rejectPending?.(this.failure);
    });
  }

  decode(block: Buffer): Promise<HeaderMap> {
    const next = this.queue.then(() => this.decodeNow(block));
    this.queue = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.inflate.close();
  }

  private decodeNow(block: Buffer): Promise<HeaderMap> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.rejectPending = reject;
      this.inflate.write(block);
      this.inflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        this.rejectPending = undefined;
        if (this.failure) return reject(this.failure);
        const raw = Buffer.concat(this.output);
        this.output = [];
        try {
          resolve(decodeHeaderBlock(raw));
        } catch (err) {
          reject(err);
        }
      });
    });
  }
}
