// Test fixture: a deterministic pseudo-random byte stream (AES-CTR over zeros), so a download can be
// checked byte for byte without keeping a copy of it.
import * as crypto from 'node:crypto';

const KEY = Buffer.alloc(16, 7);
const IV = Buffer.alloc(16, 0);
const CHUNK = 1 << 20;

/** The first n bytes of the stream, in chunks of at most 1 MiB. */
export function* payloadChunks(n: number): Generator<Buffer> {
  const cipher = crypto.createCipheriv('aes-128-ctr', KEY, IV);
  const zeros = Buffer.alloc(CHUNK);
  for (let left = n; left > 0; left -= CHUNK) yield cipher.update(zeros.subarray(0, Math.min(CHUNK, left)));
}

export function payloadSha256(n: number): string {
  const h = crypto.createHash('sha256');
  for (const c of payloadChunks(n)) h.update(c);
  return h.digest('hex');
}
