// The DNS wire format (RFC 1035, with AAAA from RFC 3596 and OPT from RFC 6891) as pure functions.
// Decoding expands compressed names, also inside the record data of the types that carry names, so a
// decoded message can be re-encoded (uncompressed) at other offsets; unknown types keep their bytes.
//
// Names are text with a trailing dot ("echo.default.svc.cluster.local."); the root is ".". A label byte
// that is "." or "\" or not printable is escaped as in zone files ("\." "\\" "\DDD").
import * as net from 'node:net';
import { bytesToIp, ipToBytes } from '../netaddr/parse.js';

export const TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  DNAME: 39,
  OPT: 41,
  ANY: 255,
} as const;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export const CLASS_IN = 1;

const QR = 0x8000;
const AA = 0x0400;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;

export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

export interface DnsRecord {
  name: string;
  type: number;
  /** For OPT: the requestor's UDP payload size. */
  class: number;
  /** For OPT: extended rcode, version and flags. */
  ttl: number;
  /** The record data, names expanded (uncompressed). */
  data: Buffer;
}

export interface DnsMessage {
  id: number;
  /** The raw 16-bit flags word: QR, opcode, AA, TC, RD, RA, rcode. */
  flags: number;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  additionals: DnsRecord[];
}

export class DnsFormatError extends Error {
  override name = 'DnsFormatError';
}

export const flags = {
  isResponse: (f: number) => (f & QR) !== 0,
  opcode: (f: number) => (f >> 11) & 0xf,
  truncated: (f: number) => (f & TC) !== 0,
  recursionDesired: (f: number) => (f & RD) !== 0,
  rcode: (f: number) => f & 0xf,
};

// --- names

function readName(buf: Buffer, start: number): { name: string; end: number } {
  const labels: string[] = [];
  let offset = start;
  let end = -1;
  let jumps = 0;
  let length = 0;
  for (;;) {
    if (offset >= buf.length) throw new DnsFormatError('a name runs past the end of the message');
    const len = buf[offset]!;
    if ((len & 0xc0) === 0xc0) {
      if (offset + 1 >= buf.length)
        throw new DnsFormatError('a name pointer runs past the end of the message');
      if (++jumps > 64) throw new DnsFormatError('a name has a compression loop');
      if (end < 0) end = offset + 2;
      offset = ((len & 0x3f) << 8) | buf[offset + 1]!;
      continue;
    }
    if (len & 0xc0) throw new DnsFormatError(`unknown label type 0x${len.toString(16)}`);
    if (len === 0) {
      if (end < 0) end = offset + 1;
      break;
    }
    if (offset + 1 + len > buf.length) throw new DnsFormatError('a label runs past the end of the message');
    length += len + 1;
    if (length > 255) throw new DnsFormatError('a name is longer than 255 bytes');
    labels.push(escapeLabel(buf, offset + 1, offset + 1 + len));
    offset += 1 + len;
  }
  return { name: labels.length === 0 ? '.' : `${labels.join('.')}.`, end };
}

function escapeLabel(buf: Buffer, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i++) {
    const c = buf[i]!;
    if (c === 0x2e || c === 0x5c) s += `\\${String.fromCharCode(c)}`;
    else if (c < 0x21 || c > 0x7e) s += `\\${String(c).padStart(3, '0')}`;
    else s += String.fromCharCode(c);
  }
  return s;
}

/** The wire form of a name (no compression). Accepts names with or without the trailing dot. */
export function encodeName(name: string): Buffer {
  if (name === '.' || name === '') return Buffer.from([0]);
  const out: number[] = [];
  let label: number[] = [];
  const flush = () => {
    if (label.length === 0) throw new DnsFormatError(`empty label in "${name}"`);
    if (label.length > 63) throw new DnsFormatError(`a label of "${name}" is longer than 63 bytes`);
    out.push(label.length, ...label);
    label = [];
  };
  for (let i = 0; i < name.length; i++) {
    const ch = name[i]!;
    if (ch === '\\') {
      const digits = /^\d{3}/.exec(name.slice(i + 1));
      if (digits) {
        label.push(Number(digits[0]) & 0xff);
        i += 3;
      } else {
        label.push(name.charCodeAt(i + 1));
        i += 1;
      }
    } else if (ch === '.') {
      flush();
    } else label.push(name.charCodeAt(i) & 0xff);
  }
  if (label.length > 0) flush();
  out.push(0);
  if (out.length > 255) throw new DnsFormatError(`"${name}" is longer than 255 bytes`);
  return Buffer.from(out);
}

/** Lowercase, with the trailing dot: the form names are compared and cached in. */
export function canonicalName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n : `${n}.`;
}

// --- record data with names (expanded on decode, so re-encoding elsewhere stays valid)

function readRdata(buf: Buffer, type: number, start: number, end: number): Buffer {
  const names = (at: number, count: number): { parts: Buffer[]; end: number } => {
    const parts: Buffer[] = [];
    let o = at;
    for (let i = 0; i < count; i++) {
      const n = readName(buf, o);
      parts.push(encodeName(n.name));
      o = n.end;
    }
    return { parts, end: o };
  };
  switch (type) {
    case TYPE.CNAME:
    case TYPE.NS:
    case TYPE.PTR:
    case TYPE.DNAME:
      return Buffer.concat(names(start, 1).parts);
    case TYPE.MX: {
      const n = names(start + 2, 1);
      return Buffer.concat([buf.subarray(start, start + 2), ...n.parts]);
    }
    case TYPE.SRV: {
      const n = names(start + 6, 1);
      return Buffer.concat([buf.subarray(start, start + 6), ...n.parts]);
    }
    case TYPE.SOA: {
      const n = names(start, 2);
      if (n.end + 20 > end) throw new DnsFormatError('a SOA record is truncated');
      return Buffer.concat([...n.parts, buf.subarray(n.end, n.end + 20)]);
    }
    default:
      return Buffer.from(buf.subarray(start, end));
  }
}

// --- messages

export function decodeMessage(buf: Buffer): DnsMessage {
  if (buf.length < 12) throw new DnsFormatError('a DNS message is at least 12 bytes');
  const counts = [buf.readUInt16BE(4), buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)];
  let offset = 12;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < counts[0]!; i++) {
    const n = readName(buf, offset);
    if (n.end + 4 > buf.length) throw new DnsFormatError('a question is truncated');
    questions.push({ name: n.name, type: buf.readUInt16BE(n.end), class: buf.readUInt16BE(n.end + 2) });
    offset = n.end + 4;
  }
  const sections: DnsRecord[][] = [[], [], []];
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s + 1]!; i++) {
      const n = readName(buf, offset);
      if (n.end + 10 > buf.length) throw new DnsFormatError('a record is truncated');
      const type = buf.readUInt16BE(n.end);
      const rdLength = buf.readUInt16BE(n.end + 8);
      const rdStart = n.end + 10;
      if (rdStart + rdLength > buf.length)
        throw new DnsFormatError('record data runs past the end of the message');
      sections[s]!.push({
        name: n.name,
        type,
        class: buf.readUInt16BE(n.end + 2),
        ttl: buf.readUInt32BE(n.end + 4),
        data: readRdata(buf, type, rdStart, rdStart + rdLength),
      });
      offset = rdStart + rdLength;
    }
  }
  return {
    id: buf.readUInt16BE(0),
    flags: buf.readUInt16BE(2),
    questions,
    answers: sections[0]!,
    authorities: sections[1]!,
    additionals: sections[2]!,
  };
}

export function encodeMessage(m: DnsMessage): Buffer {
  const parts: Buffer[] = [];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(m.id, 0);
  header.writeUInt16BE(m.flags, 2);
  header.writeUInt16BE(m.questions.length, 4);
  header.writeUInt16BE(m.answers.length, 6);
  header.writeUInt16BE(m.authorities.length, 8);
  header.writeUInt16BE(m.additionals.length, 10);
  parts.push(header);
  for (const q of m.questions) {
    const tail = Buffer.alloc(4);
    tail.writeUInt16BE(q.type, 0);
    tail.writeUInt16BE(q.class, 2);
    parts.push(encodeName(q.name), tail);
  }
  for (const r of [...m.answers, ...m.authorities, ...m.additionals]) {
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(r.type, 0);
    fixed.writeUInt16BE(r.class, 2);
    fixed.writeUInt32BE(r.ttl >>> 0, 4);
    fixed.writeUInt16BE(r.data.length, 8);
    parts.push(encodeName(r.name), fixed, r.data);
  }
  return Buffer.concat(parts);
}

// --- building queries and answers

export function buildQuery(id: number, name: string, type: number, recursionDesired = true): Buffer {
  return encodeMessage({
    id,
    flags: recursionDesired ? RD : 0,
    questions: [{ name, type, class: CLASS_IN }],
    answers: [],
    authorities: [],
    additionals: [],
  });
}

/** A response to `query`: same id and question, RD copied, RA set. */
export function buildResponse(
  query: DnsMessage,
  rcode: number,
  answers: DnsRecord[],
  options: { authoritative?: boolean; authorities?: DnsRecord[] } = {},
): DnsMessage {
  let f = QR | RA | (query.flags & RD) | (query.flags & 0x7800) | (rcode & 0xf);
  if (options.authoritative) f |= AA;
  return {
    id: query.id,
    flags: f,
    questions: query.questions,
    answers,
    authorities: options.authorities ?? [],
    additionals: [],
  };
}

/** An A or AAAA record for an address (the family picks the type). */
export function addressRecord(name: string, ip: string, ttl: number): DnsRecord {
  return { name, type: net.isIPv6(ip) ? TYPE.AAAA : TYPE.A, class: CLASS_IN, ttl, data: ipToBytes(ip) };
}

/** The address in an A or AAAA record. */
export function recordAddress(r: DnsRecord): string | undefined {
  if ((r.type === TYPE.A && r.data.length === 4) || (r.type === TYPE.AAAA && r.data.length === 16))
    return bytesToIp(r.data);
  return undefined;
}

/** The name in a CNAME/PTR/NS record. */
export function recordName(r: DnsRecord): string {
  return readName(r.data, 0).name;
}

/** Sets the TC flag and drops the records: what a UDP answer too large for the client becomes. */
export function truncated(m: DnsMessage): DnsMessage {
  return { ...m, flags: m.flags | TC, answers: [], authorities: [], additionals: [] };
}

/** The UDP payload size the query's sender accepts (512 without EDNS). */
export function udpPayloadLimit(query: DnsMessage): number {
  const opt = query.additionals.find((r) => r.type === TYPE.OPT);
  return opt ? Math.max(512, Math.min(opt.class, 65_535)) : 512;
}
