// Packets the VIF writes on its own: UDP datagrams coming back from the cluster, TCP resets for refused
// or unknown flows, ICMP "port unreachable" for refused UDP flows. Checksums are computed in full.
import { checksumOf, sumWords } from './checksum.js';
import {
  type ParsedPacket,
  PROTO_ICMP,
  PROTO_ICMPV6,
  PROTO_TCP,
  PROTO_UDP,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  tcpAck,
  tcpFlags,
  tcpPayloadLength,
  tcpSeq,
} from './packet.js';

const HOP_LIMIT = 64;

/** An IP packet around a transport segment whose checksum field (at checksumAt, 0 now) is filled in. */
function ipPacket(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  segment: Buffer,
  checksumAt: number,
): Buffer {
  const v4 = src.length === 4;
  const headerLength = v4 ? 20 : 40;
  const p = Buffer.alloc(headerLength + segment.length);
  if (v4) {
    p[0] = 0x45;
    p.writeUInt16BE(p.length, 2);
    p.writeUInt16BE(0x4000, 6); // don't fragment
    p[8] = HOP_LIMIT;
    p[9] = protocol;
    p.set(src, 12);
    p.set(dst, 16);
    p.writeUInt16BE(checksumOf(sumWords(p, 0, 20)), 10);
  } else {
    p[0] = 0x60;
    p.writeUInt16BE(segment.length, 4);
    p[6] = protocol;
    p[7] = HOP_LIMIT;
    p.set(src, 8);
    p.set(dst, 24);
  }
  segment.copy(p, headerLength);
  if (protocol === PROTO_ICMP) {
    p.writeUInt16BE(checksumOf(sumWords(p, headerLength, p.length)), headerLength + checksumAt);
    return p;
  }
  // Pseudo-header: addresses, protocol and segment length (RFC 793/768 for v4, RFC 8200 8.1 for v6).
  let sum = sumWords(src, 0, src.length);
  sum = sumWords(dst, 0, dst.length, sum);
  sum += protocol + (segment.length & 0xffff) + Math.floor(segment.length / 0x10000);
  sum = sumWords(p, headerLength, p.length, sum);
  let c = checksumOf(sum);
  if (protocol === PROTO_UDP && c === 0) c = 0xffff;
  p.writeUInt16BE(c, headerLength + checksumAt);
  return p;
}

export function buildUdpPacket(
  src: Uint8Array,
  srcPort: number,
  dst: Uint8Array,
  dstPort: number,
  payload: Uint8Array,
): Buffer {
  const segment = Buffer.alloc(8 + payload.length);
  segment.writeUInt16BE(srcPort, 0);
  segment.writeUInt16BE(dstPort, 2);
  segment.writeUInt16BE(segment.length, 4);
  segment.set(payload, 8);
  return ipPacket(src, dst, PROTO_UDP, segment, 6);
}

/**
 * The RST a TCP stack sends for a segment that has no connection (RFC 9293 3.10.7.1): to a SYN (no ACK) it
 * is RST|ACK acknowledging it, which the client's connect() reports as "connection refused".
 */
export function buildTcpReset(p: Buffer, info: ParsedPacket): Buffer | undefined {
  const flags = tcpFlags(p, info);
  if (flags & TCP_RST) return undefined; // never answer a reset
  const segment = Buffer.alloc(20);
  segment.writeUInt16BE(info.dstPort, 0);
  segment.writeUInt16BE(info.srcPort, 2);
  segment[12] = 5 << 4;
  if (flags & TCP_ACK) {
    segment.writeUInt32BE(tcpAck(p, info), 4);
    segment[13] = TCP_RST;
  } else {
    let consumed = tcpPayloadLength(p, info);
    if (flags & TCP_SYN) consumed++;
    if (flags & TCP_FIN) consumed++;
    segment.writeUInt32BE((tcpSeq(p, info) + consumed) >>> 0, 8);
    segment[13] = TCP_RST | TCP_ACK;
  }
  return ipPacket(destination(p, info), source(p, info), PROTO_TCP, segment, 16);
}

/**
 * ICMP "port unreachable" for a datagram (RFC 792 / RFC 4443), quoting as much of it as the minimum MTU
 * allows: a connected UDP socket then fails with ECONNREFUSED instead of waiting.
 */
export function buildPortUnreachable(p: Buffer, info: ParsedPacket): Buffer {
  const v4 = info.version === 4;
  const quoted = p.subarray(0, Math.min(info.length, v4 ? 548 : 1232));
  const segment = Buffer.alloc(8 + quoted.length);
  segment[0] = v4 ? 3 : 1; // destination unreachable
  segment[1] = v4 ? 3 : 4; // port unreachable
  quoted.copy(segment, 8);
  return ipPacket(destination(p, info), source(p, info), v4 ? PROTO_ICMP : PROTO_ICMPV6, segment, 2);
}

function source(p: Buffer, info: ParsedPacket): Buffer {
  return Buffer.from(p.subarray(info.srcOffset, info.srcOffset + info.addressLength));
}

function destination(p: Buffer, info: ParsedPacket): Buffer {
  return Buffer.from(p.subarray(info.dstOffset, info.dstOffset + info.addressLength));
}
