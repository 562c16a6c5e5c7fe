// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
// Sums are kept unfolded in a JS number (53 bits hold far more than a 64 KiB packet needs) and folded once.

/** Adds the big-endian 16-bit words of buf[start, end) to sum; an odd last byte is padded with zero. */
export function sumWords(buf: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** Folds a sum to 16 bits with end-around carry (one's complement addition). */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum field value for a sum: its one's complement. */
export function checksumOf(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/**
 * The change in a sum when the words of `before` are replaced by those of `after` (same length, even):
 * sum of ~old + new per word, as RFC 1624 eqn. 3 wants it. Add several deltas before applying them.
 */
export function replacementDelta(before: Uint8Array, after: Uint8Array, delta = 0): number {
  for (let i = 0; i + 1 < before.length; i += 2) {
    delta += (~((before[i]! << 8) | before[i + 1]!) & 0xffff) + ((after[i]! << 8) | after[i + 1]!);
  }
  return delta;
}

/** The delta for one 16-bit word changing from oldWord to newWord. */
export function wordDelta(oldWord: number, newWord: number, delta = 0): number {
  return delta + (~oldWord & 0xffff) + (newWord & 0xffff);
}

/** Applies a delta to the checksum stored at buf[pos]: HC' = ~(~HC + delta) (RFC 1624 eqn. 3). */
export function applyDelta(buf: Buffer, pos: number, delta: number): void {
  const old = buf.readUInt16BE(pos);
  buf.writeUInt16BE(~foldSum((~old & 0xffff) + delta) & 0xffff, pos);
}
