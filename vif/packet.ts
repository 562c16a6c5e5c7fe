// Parsing of the IP packets a TUN device delivers: IPv4 and IPv6 (with extension headers), and the
// transport header fields the VIF needs (TCP/UDP ports, TCP flags and sequence numbers, ICMP type).
// Pure functions over Buffers; nothing here allocates per packet beyond the small result object.

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMPV6 = 58;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export interface ParsedPacket {
  version: 4 | 6;
  /** The transport protocol: for IPv6, the one after the extension headers. */
  protocol: number;
  /** Where the transport header starts (the IP header with its options or extension headers). */
  headerLength: number;
  /** The IP packet's length from its header; bytes beyond it in the buffer are not part of it. */
  length: number;
  /** Offsets of the source and destination addresses; each is addressLength bytes. */
  srcOffset: number;
  dstOffset: number;
  addressLength: 4 | 16;
  /** TCP/UDP ports; 0 for other protocols. */
  srcPort: number;
  dstPort: number;
  /** Part of a fragmented datagram: the transport header may be missing or incomplete. */
  fragment: boolean;
}

// IPv6 extension headers that may precede the transport header (RFC 8200 section 4).
const V6_HOP_BY_HOP = 0;
const V6_ROUTING = 43;
const V6_FRAGMENT = 44;
const V6_DEST_OPTIONS = 60;

/** Parses an IP packet; undefined when it is malformed or truncated (the caller drops it). */
export function parsePacket(p: Buffer): ParsedPacket | undefined {
  if (p.length < 1) return undefined;
  const version = p[0]! >> 4;
  if (version === 4) return parseV4(p);
  if (version === 6) return parseV6(p);
  return undefined;
}

function parseV4(p: Buffer): ParsedPacket | undefined {
  if (p.length < 20) return undefined;
  const headerLength = (p[0]! & 0x0f) * 4;
  const length = p.readUInt16BE(2);
  if (headerLength < 20 || length < headerLength || length > p.length) return undefined;
  const flagsAndOffset = p.readUInt16BE(6);
  const fragment = (flagsAndOffset & 0x3fff) !== 0; // MF set or a non-zero offset
  const out: ParsedPacket = {
    version: 4,
    protocol: p[9]!,
    headerLength,
    length,
    srcOffset: 12,
    dstOffset: 16,
    addressLength: 4,
    srcPort: 0,
    dstPort: 0,
    fragment,
  };
  return withPorts(p, out);
}

function parseV6(p: Buffer): ParsedPacket | undefined {
  if (p.length < 40) return undefined;
  const length = 40 + p.readUInt16BE(4);
  if (length > p.length) return undefined;
  let next = p[6]!;
  let offset = 40;
  let fragment = false;
  // Walk the extension headers; a bounded count keeps a crafted chain from looping long.
  for (let hops = 0; hops < 8; hops++) {
    if (next === V6_HOP_BY_HOP || next === V6_ROUTING || next === V6_DEST_OPTIONS) {
      if (offset + 8 > length) return undefined;
      const len = (p[offset + 1]! + 1) * 8;
      next = p[offset]!;
      offset += len;
    } else if (next === V6_FRAGMENT) {
      if (offset + 8 > length) return undefined;
      fragment = true;
      next = p[offset]!;
      offset += 8;
    } else break;
  }
  if (offset > length) return undefined;
  const out: ParsedPacket = {
    version: 6,
    protocol: next,
    headerLength: offset,
    length,
    srcOffset: 8,
    dstOffset: 24,
    addressLength: 16,
    srcPort: 0,
    dstPort: 0,
    fragment,
  };
  return withPorts(p, out);
}

function withPorts(p: Buffer, out: ParsedPacket): ParsedPacket | undefined {
  const h = out.headerLength;
  const room = out.length - h;
  if (out.fragment) return out;
  if (out.protocol === PROTO_TCP) {
    if (room < 20) return undefined;
    const dataOffset = (p[h + 12]! >> 4) * 4;
    if (dataOffset < 20 || dataOffset > room) return undefined;
  } else if (out.protocol === PROTO_UDP) {
    if (room < 8) return undefined;
  } else if (out.protocol === PROTO_ICMP || out.protocol === PROTO_ICMPV6) {
    if (room < 8) return undefined;
    return out;
  } else return out;
  out.srcPort = p.readUInt16BE(h);
  out.dstPort = p.readUInt16BE(h + 2);
  return out;
}

export function tcpFlags(p: Buffer, info: ParsedPacket): number {
  return p[info.headerLength + 13]!;
}

export function tcpSeq(p: Buffer, info: ParsedPacket): number {
  return p.readUInt32BE(info.headerLength + 4);
}

export function tcpAck(p: Buffer, info: ParsedPacket): number {
  return p.readUInt32BE(info.headerLength + 8);
}

/** The TCP payload length (bytes after the TCP header). */
export function tcpPayloadLength(p: Buffer, info: ParsedPacket): number {
  return info.length - info.headerLength - (p[info.headerLength + 12]! >> 4) * 4;
}

/** The UDP payload (a view into the packet, not a copy). */
export function udpPayload(p: Buffer, info: ParsedPacket): Buffer {
  const start = info.headerLength + 8;
  const udpLength = p.readUInt16BE(info.headerLength + 4);
  // The UDP length field may be smaller than the IP payload (trailing padding); never trust it beyond it.
  const end = Math.min(info.length, info.headerLength + Math.max(udpLength, 8));
  return p.subarray(start, end);
}

/**
 * A string naming the flow (source address, destination address, ports) in the packet's own bytes:
 * cheap to build per packet and usable as a Map key. The reverse direction has a different key.
 */
export function flowKey(p: Buffer, info: ParsedPacket): string {
  const h = info.headerLength;
  return (
    p.toString('latin1', info.srcOffset, info.dstOffset + info.addressLength) + p.toString('latin1', h, h + 4)
  );
}

/** The same key built from parts (for flows created before any packet of theirs is seen). */
export function flowKeyOf(src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number): string {
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(srcPort, 0);
  ports.writeUInt16BE(dstPort, 2);
  return Buffer.concat([src, dst, ports]).toString('latin1');
}

export function sourceAddress(p: Buffer, info: ParsedPacket): Buffer {
  return p.subarray(info.srcOffset, info.srcOffset + info.addressLength);
}

export function destinationAddress(p: Buffer, info: ParsedPacket): Buffer {
  return p.subarray(info.dstOffset, info.dstOffset + info.addressLength);
}

/** "tcp 10.0.0.1:5000 -> 10.96.0.1:80 [SYN]", for logs. */
export function describePacket(p: Buffer, info: ParsedPacket): string {
  const addr = (o: number) =>
    info.version === 4
      ? `${p[o]}.${p[o + 1]}.${p[o + 2]}.${p[o + 3]}`
      : `[${p.toString('hex', o, o + 16).replace(/(.{4})(?!$)/g, '$1:')}]`;
  const proto =
    info.protocol === PROTO_TCP
      ? 'tcp'
      : info.protocol === PROTO_UDP
        ? 'udp'
        : info.protocol === PROTO_ICMP || info.protocol === PROTO_ICMPV6
          ? 'icmp'
          : `proto ${info.protocol}`;
  let s = `${proto} ${addr(info.srcOffset)}:${info.srcPort} -> ${addr(info.dstOffset)}:${info.dstPort}`;
  if (info.protocol === PROTO_TCP && !info.fragment) {
    const f = tcpFlags(p, info);
    const names = (['FIN', 'SYN', 'RST', 'PSH', 'ACK'] as const).filter((_, i) => f & (1 << i));
    s += ` [${names.join('|')}]`;
  }
  return s;
}
