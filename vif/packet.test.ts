import { randomBytes } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bytesToIp, ipToBytes } from '../netaddr/parse.js';
import {
  flowKey,
  flowKeyOf,
  PROTO_ICMP,
  PROTO_ICMPV6,
  PROTO_TCP,
  PROTO_UDP,
  parsePacket,
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  tcpAck,
  tcpFlags,
  tcpSeq,
  udpPayload,
} from './packet.js';
import { buildPortUnreachable, buildTcpReset, buildUdpPacket } from './packet-build.js';
import { isEchoRequest, rewriteFlow, toEchoReply } from './packet-rewrite.js';

// An independent, deliberately naive checksum (byte pairs summed, folded at the end) to verify against.
function naiveSum(bytes: number[]): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) s += bytes[i]! * 256 + (bytes[i + 1] ?? 0);
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return s;
}

/** True when every checksum of the packet verifies (IPv4 header; TCP/UDP/ICMP with pseudo-header). */
function checksumsValid(p: Buffer): boolean {
  const v4 = p[0]! >> 4 === 4;
  const hl = v4 ? (p[0]! & 15) * 4 : 40;
  const total = v4 ? p.readUInt16BE(2) : 40 + p.readUInt16BE(4);
  const proto = v4 ? p[9]! : p[6]!;
  if (v4 && naiveSum([...p.subarray(0, hl)]) !== 0xffff) return false;
  const seg = [...p.subarray(hl, total)];
  if (proto === PROTO_UDP && v4 && p.readUInt16BE(hl + 6) === 0) return true;
  if (proto === PROTO_ICMP) return naiveSum(seg) === 0xffff;
  const addrs = v4 ? [...p.subarray(12, 20)] : [...p.subarray(8, 40)];
  const len = seg.length;
  const pseudo = [...addrs, 0, 0, len >> 8, len & 255, 0, 0, 0, proto];
  return naiveSum([...pseudo, ...seg, ...(seg.length % 2 ? [0] : [])]) === 0xffff;
}

function fillChecksums(p: Buffer): Buffer {
  const v4 = p[0]! >> 4 === 4;
  const hl = v4 ? (p[0]! & 15) * 4 : 40;
  const proto = v4 ? p[9]! : p[6]!;
  const off = proto === PROTO_TCP ? 16 : proto === PROTO_UDP ? 6 : 2;
  p.writeUInt16BE(0, hl + off);
  if (v4) {
    p.writeUInt16BE(0, 10);
    p.writeUInt16BE(~naiveSum([...p.subarray(0, hl)]) & 0xffff, 10);
  }
  const seg = [...p.subarray(hl)];
  let c: number;
  if (proto === PROTO_ICMP) c = ~naiveSum(seg) & 0xffff;
  else {
    const addrs = v4 ? [...p.subarray(12, 20)] : [...p.subarray(8, 40)];
    const pseudo = [...addrs, 0, 0, seg.length >> 8, seg.length & 255, 0, 0, 0, proto];
    c = ~naiveSum([...pseudo, ...seg, ...(seg.length % 2 ? [0] : [])]) & 0xffff;
  }
  p.writeUInt16BE(c, hl + off);
  return p;
}

function ipHeader(src: string, dst: string, proto: number, payloadLength: number): Buffer {
  const s = ipToBytes(src);
  const d = ipToBytes(dst);
  if (s.length === 4) {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h.writeUInt16BE(20 + payloadLength, 2);
    h.writeUInt16BE(0x4000, 6);
    h[8] = 64;
    h[9] = proto;
    s.copy(h, 12);
    d.copy(h, 16);
    return h;
  }
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(payloadLength, 4);
  h[6] = proto;
  h[7] = 64;
  s.copy(h, 8);
  d.copy(h, 24);
  return h;
}

function tcp(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  flags: number,
  payload = Buffer.alloc(0),
) {
  const seg = Buffer.alloc(20 + payload.length);
  seg.writeUInt16BE(sport, 0);
  seg.writeUInt16BE(dport, 2);
  seg.writeUInt32BE(0x01020304, 4);
  seg.writeUInt32BE(0xa0b0c0d0, 8);
  seg[12] = 5 << 4;
  seg[13] = flags;
  seg.writeUInt16BE(65535, 14);
  payload.copy(seg, 20);
  return fillChecksums(Buffer.concat([ipHeader(src, dst, PROTO_TCP, seg.length), seg]));
}

function udp(src: string, sport: number, dst: string, dport: number, payload: Buffer) {
  const seg = Buffer.alloc(8 + payload.length);
  seg.writeUInt16BE(sport, 0);
  seg.writeUInt16BE(dport, 2);
  seg.writeUInt16BE(seg.length, 4);
  payload.copy(seg, 8);
  return fillChecksums(Buffer.concat([ipHeader(src, dst, PROTO_UDP, seg.length), seg]));
}

test('parses IPv4 and IPv6 TCP/UDP headers', () => {
  const p = tcp('198.18.0.1', 40000, '10.96.0.10', 80, TCP_SYN);
  const info = parsePacket(p)!;
  assert.equal(
    [info.version, info.protocol, info.headerLength, info.length, info.srcPort, info.dstPort, info.fragment],
    [4, PROTO_TCP, 20, 40, 40000, 80, false],
  );
  assert.is(tcpFlags(p, info), TCP_SYN);
  const q = udp('fd00::1', 5353, 'fd00:96::a', 53, Buffer.from('hello'));
  const qi = parsePacket(q)!;
  assert.equal(
    [qi.version, qi.protocol, qi.headerLength, qi.srcPort, qi.dstPort],
    [6, PROTO_UDP, 40, 5353, 53],
  );
  assert.is(udpPayload(q, qi).toString(), 'hello');
});

test('walks IPv6 extension headers and flags fragments', () => {
  const inner = tcp('fd00::1', 1000, 'fd00::2', 443, TCP_SYN);
  const seg = inner.subarray(40);
  const hopByHop = Buffer.from([PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
  const h = ipHeader('fd00::1', 'fd00::2', 0, hopByHop.length + seg.length);
  const info = parsePacket(Buffer.concat([h, hopByHop, seg]))!;
  assert.equal([info.protocol, info.headerLength, info.dstPort], [PROTO_TCP, 48, 443]);
  const frag = Buffer.from(tcp('10.0.0.1', 1, '10.0.0.2', 2, TCP_ACK));
  frag.writeUInt16BE(0x2000, 6); // more fragments
  assert.ok(parsePacket(frag)!.fragment);
});

test('rejects malformed and truncated packets', () => {
  const good = tcp('10.0.0.1', 1, '10.0.0.2', 2, TCP_SYN);
  assert.is(parsePacket(Buffer.alloc(0)), undefined);
  assert.is(parsePacket(good.subarray(0, 30)), undefined); // total length beyond the buffer
  const badIhl = Buffer.from(good);
  badIhl[0] = 0x44;
  assert.is(parsePacket(badIhl), undefined);
  const badOffset = Buffer.from(good);
  badOffset[32] = 15 << 4; // TCP data offset beyond the packet
  assert.is(parsePacket(badOffset), undefined);
  const v7 = Buffer.from(good);
  v7[0] = 0x75;
  assert.is(parsePacket(v7), undefined);
});

test('rewrites addresses and ports with incremental checksums that verify (v4 and v6, TCP and UDP)', () => {
  for (let i = 0; i < 300; i++) {
    const payload = randomBytes(i * 7 + (i % 2));
    const v6 = i % 3 === 0;
    const [a, b, c, d] = v6
      ? ['fd00::1', 'fd00:96::10', 'fd74:7000::5', 'fd74:7000::1']
      : ['198.18.0.1', '10.96.0.10', '198.18.0.5', '198.18.0.1'];
    const p = i % 2 ? tcp(a, 40000 + i, b, 80, TCP_ACK, payload) : udp(a, 40000 + i, b, 53, payload);
    const info = parsePacket(p)!;
    rewriteFlow(p, info, ipToBytes(c), 1024 + i, ipToBytes(d), 41000);
    assert.ok(checksumsValid(p), `packet ${i} verifies after the rewrite`);
    const again = parsePacket(p)!;
    assert.equal([again.srcPort, again.dstPort], [1024 + i, 41000]);
    assert.is(bytesToIp(p.subarray(again.srcOffset, again.srcOffset + again.addressLength)), c);
    // And back: the original bytes return exactly.
    rewriteFlow(p, again, ipToBytes(a), 40000 + i, ipToBytes(b), i % 2 ? 80 : 53);
    assert.ok(checksumsValid(p));
  }
});

test('keeps an absent IPv4 UDP checksum absent', () => {
  const p = udp('10.0.0.1', 1000, '10.96.0.1', 53, Buffer.from('x'));
  p.writeUInt16BE(0, 26);
  const info = parsePacket(p)!;
  rewriteFlow(p, info, ipToBytes('10.0.0.9'), 2000, ipToBytes('10.0.0.1'), 3000);
  assert.is(p.readUInt16BE(26), 0);
  assert.ok(checksumsValid(p));
});

test('flow keys tell directions and flows apart', () => {
  const p = tcp('198.18.0.1', 40000, '10.96.0.10', 80, TCP_SYN);
  const info = parsePacket(p)!;
  assert.is(flowKey(p, info), flowKeyOf(ipToBytes('198.18.0.1'), 40000, ipToBytes('10.96.0.10'), 80));
  const back = tcp('10.96.0.10', 80, '198.18.0.1', 40000, TCP_ACK);
  assert.is.not(flowKey(back, parsePacket(back)!), flowKey(p, info));
});

test('a SYN to nowhere is answered with RST|ACK acknowledging it (connection refused)', () => {
  const syn = tcp('198.18.0.1', 40000, '10.96.0.10', 81, TCP_SYN);
  const info = parsePacket(syn)!;
  const rst = buildTcpReset(syn, info)!;
  const ri = parsePacket(rst)!;
  assert.ok(checksumsValid(rst));
  assert.equal([ri.srcPort, ri.dstPort], [81, 40000]);
  assert.is(tcpFlags(rst, ri), TCP_RST | TCP_ACK);
  assert.is(tcpAck(rst, ri), 0x01020305);
  assert.is(bytesToIp(rst.subarray(12, 16)), '10.96.0.10');
  // A segment with ACK gets a bare RST with seq = its ack; a RST is never answered.
  const ack = tcp('198.18.0.1', 40000, '10.96.0.10', 81, TCP_ACK, Buffer.from('data'));
  const r2 = buildTcpReset(ack, parsePacket(ack)!)!;
  const r2i = parsePacket(r2)!;
  assert.is(tcpFlags(r2, r2i), TCP_RST);
  assert.is(tcpSeq(r2, r2i), 0xa0b0c0d0);
  assert.is(buildTcpReset(r2, r2i), undefined);
  const v6 = tcp('fd00::1', 5, 'fd00::2', 6, TCP_SYN);
  assert.ok(checksumsValid(buildTcpReset(v6, parsePacket(v6)!)!));
});

test('builds UDP datagrams and port-unreachable errors that verify', () => {
  for (const [src, dst] of [
    ['10.96.0.10', '198.18.0.1'],
    ['fd00:96::10', 'fd74::1'],
  ] as const) {
    const p = buildUdpPacket(ipToBytes(src), 53, ipToBytes(dst), 40000, Buffer.from('answer'));
    const info = parsePacket(p)!;
    assert.ok(checksumsValid(p));
    assert.equal([info.srcPort, info.dstPort], [53, 40000]);
    assert.is(udpPayload(p, info).toString(), 'answer');
    const query = udp(dst, 40000, src, 9, Buffer.from('q'));
    const err = buildPortUnreachable(query, parsePacket(query)!);
    const ei = parsePacket(err)!;
    assert.ok(checksumsValid(err));
    assert.is(ei.protocol, src.includes(':') ? PROTO_ICMPV6 : PROTO_ICMP);
    assert.equal([err[ei.headerLength], err[ei.headerLength + 1]], src.includes(':') ? [1, 4] : [3, 3]);
    assert.ok(err.subarray(ei.headerLength + 8).equals(query), 'quotes the datagram');
  }
});

test('answers ICMP and ICMPv6 echo requests in place', () => {
  const body = Buffer.concat([Buffer.from([8, 0, 0, 0, 0x12, 0x34, 0, 1]), randomBytes(56)]);
  const v4 = fillChecksums(
    Buffer.concat([ipHeader('198.18.0.1', '10.96.0.10', PROTO_ICMP, body.length), body]),
  );
  const i4 = parsePacket(v4)!;
  assert.ok(isEchoRequest(v4, i4));
  toEchoReply(v4, i4);
  assert.ok(checksumsValid(v4));
  assert.is(v4[20], 0);
  assert.is(bytesToIp(v4.subarray(12, 16)), '10.96.0.10');
  const b6 = Buffer.from(body);
  b6[0] = 128;
  const v6 = fillChecksums(Buffer.concat([ipHeader('fd74::1', 'fd00:96::1', PROTO_ICMPV6, b6.length), b6]));
  const i6 = parsePacket(v6)!;
  assert.ok(isEchoRequest(v6, i6));
  toEchoReply(v6, i6);
  assert.ok(checksumsValid(v6));
  assert.is(v6[40], 129);
});

test.run();
