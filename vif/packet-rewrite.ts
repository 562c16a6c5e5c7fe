// In-place rewriting of IP packets with incremental checksum updates (RFC 1624): rewriting one address
// costs a few word operations instead of a pass over a 64 KiB payload.
import { applyDelta, replacementDelta, wordDelta } from './checksum.js';
import { type ParsedPacket, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from './packet.js';

/**
 * Sets the source and destination address and port of a TCP or UDP packet. The addresses must have the
 * packet's address length. The IPv4 header checksum and the transport checksum (whose pseudo-header
 * covers the addresses) are updated incrementally.
 */
export function rewriteFlow(
  p: Buffer,
  info: ParsedPacket,
  src: Uint8Array,
  srcPort: number,
  dst: Uint8Array,
  dstPort: number,
): void {
  const h = info.headerLength;
  const oldSrc = p.subarray(info.srcOffset, info.srcOffset + info.addressLength);
  const oldDst = p.subarray(info.dstOffset, info.dstOffset + info.addressLength);
  const addressDelta = replacementDelta(oldDst, dst, replacementDelta(oldSrc, src));
  let transportDelta = wordDelta(p.readUInt16BE(h), srcPort, addressDelta);
  transportDelta = wordDelta(p.readUInt16BE(h + 2), dstPort, transportDelta);
  if (info.version === 4) applyDelta(p, 10, addressDelta);
  p.set(src, info.srcOffset);
  p.set(dst, info.dstOffset);
  p.writeUInt16BE(srcPort, h);
  p.writeUInt16BE(dstPort, h + 2);
  if (info.protocol === PROTO_TCP) applyDelta(p, h + 16, transportDelta);
  else if (info.protocol === PROTO_UDP) {
    // IPv4 UDP may carry no checksum (0); one's complement 0 is then sent as 0xffff (RFC 768).
    if (info.version === 4 && p.readUInt16BE(h + 6) === 0) return;
    applyDelta(p, h + 6, transportDelta);
    if (p.readUInt16BE(h + 6) === 0) p.writeUInt16BE(0xffff, h + 6);
  }
  info.srcPort = srcPort;
  info.dstPort = dstPort;
}

/** True when the packet is an ICMP (v4 or v6) echo request. */
export function isEchoRequest(p: Buffer, info: ParsedPacket): boolean {
  if (info.fragment) return false;
  if (info.version === 4) return info.protocol === PROTO_ICMP && p[info.headerLength] === 8;
  return info.protocol === PROTO_ICMPV6 && p[info.headerLength] === 128;
}

/**
 * Turns an echo request into its echo reply in place: addresses swapped, type changed, hop limit reset.
 * Swapping the addresses leaves every checksum unchanged (the sums are commutative).
 */
export function toEchoReply(p: Buffer, info: ParsedPacket): void {
  const h = info.headerLength;
  const src = Buffer.from(p.subarray(info.srcOffset, info.srcOffset + info.addressLength));
  p.copy(p, info.srcOffset, info.dstOffset, info.dstOffset + info.addressLength);
  p.set(src, info.dstOffset);
  const oldTypeWord = p.readUInt16BE(h);
  p[h] = info.version === 4 ? 0 : 129;
  applyDelta(p, h + 2, wordDelta(oldTypeWord, p.readUInt16BE(h)));
  if (info.version === 4) {
    const oldTtlWord = p.readUInt16BE(8);
    p[8] = 64;
    applyDelta(p, 10, wordDelta(oldTtlWord, p.readUInt16BE(8)));
  } else p[7] = 64;
}
