// SPDY/3.1 framing (draft-mbelshe-httpbis-spdy-00 plus the 3.1 flow-control changes), the subset the
// Kubernetes streaming protocols use between a client, the API server (Go's spdystream) and a kubelet.
// Pure: byte buffers in, frames out, and the reverse. Header blocks are handled raw here; their
// zlib compression lives in header-compression.ts.

export const SPDY_VERSION = 3;

export const FrameType = {
  SynStream: 1,
  SynReply: 2,
  RstStream: 3,
  Settings: 4,
  Noop: 5,
  Ping: 6,
  GoAway: 7,
  Headers: 8,
  WindowUpdate: 9,
} as const;

export const FLAG_FIN = 0x01;
export const FLAG_UNIDIRECTIONAL = 0x02;

/** RST_STREAM status codes. */
export const RstStatus = {
  ProtocolError: 1,
  InvalidStream: 2,
  RefusedStream: 3,
  UnsupportedVersion: 4,
  Cancel: 5,
  InternalError: 6,
  FlowControlError: 7,
  StreamInUse: 8,
  StreamAlreadyClosed: 9,
} as const;

/** The largest payload a frame's 24-bit length field can carry. */
export const MAX_FRAME_PAYLOAD = 0xffffff;

export class SpdyProtocolError extends Error {
  override name = 'SpdyProtocolError';
}

export interface DataFrame {
  control: false;
  streamId: number;
  flags: number;
  data: Buffer;
}

export interface ControlFrame {
  control: true;
  version: number;
  type: number;
  flags: number;
  body: Buffer;
}

export type Frame = DataFrame | ControlFrame;

/**
 * Header names and values. SPDY joins several values of one name with NUL; the Kubernetes protocols
 * send one value per name, so values stay joined as they came.
 */
export type HeaderMap = Record<string, string>;

const FRAME_HEADER_LENGTH = 8;

/**
 * Cuts a byte stream into frames. Control frames come whole (copied only when one spans received
 * chunks). With `streamData`, a DATA frame's payload comes in pieces as its bytes arrive, each a view of
 * a received chunk (never copied): every piece carries the frame's stream id, and only the last one its
 * flags (FIN); a relay forwards each piece at once instead of waiting for, and copying, the whole frame.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private length = 0;
  /** streamData: the DATA frame whose payload is being delivered, and how much of it is still to come. */
  private data: { streamId: number; flags: number; left: number } | undefined;

  constructor(private readonly options: { streamData?: boolean } = {}) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Bytes received but not yet returned as frames. */
  get buffered(): number {
    return this.length;
  }

  /** The next complete frame (or DATA piece), or undefined until more bytes arrive. */
  next(): Frame | undefined {
    if (this.data) return this.nextPiece(this.data);
    if (this.length < FRAME_HEADER_LENGTH) return undefined;
    const header = this.peek(FRAME_HEADER_LENGTH);
    const payloadLength = header.readUIntBE(5, 3);
    if (this.options.streamData && (header[0]! & 0x80) === 0) {
      const streamId = header.readUInt32BE(0) & 0x7fffffff;
      const flags = header[4]!;
      this.take(FRAME_HEADER_LENGTH);
      if (payloadLength === 0) return { control: false, streamId, flags, data: Buffer.alloc(0) };
      this.data = { streamId, flags, left: payloadLength };
      return this.nextPiece(this.data);
    }
    if (this.length < FRAME_HEADER_LENGTH + payloadLength) return undefined;
    const frame = this.take(FRAME_HEADER_LENGTH + payloadLength);
    const flags = frame[4]!;
    const payload = frame.subarray(FRAME_HEADER_LENGTH);
    if ((frame[0]! & 0x80) === 0) {
      return { control: false, streamId: frame.readUInt32BE(0) & 0x7fffffff, flags, data: payload };
    }
    return {
      control: true,
      version: frame.readUInt16BE(0) & 0x7fff,
      type: frame.readUInt16BE(2),
      flags,
      body: payload,
    };
  }

  /** As much of the current DATA payload as one received chunk holds. */
  private nextPiece(d: { streamId: number; flags: number; left: number }): DataFrame | undefined {
    if (this.length === 0) return undefined;
    const piece = this.take(Math.min(d.left, this.chunks[0]!.length));
    d.left -= piece.length;
    if (d.left > 0) return { control: false, streamId: d.streamId, flags: 0, data: piece };
    this.data = undefined;
    return { control: false, streamId: d.streamId, flags: d.flags, data: piece };
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (const chunk of this.chunks) {
      const k = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, k);
      filled += k;
      if (filled === n) break;
    }
    return out;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0]!;
        const k = Math.min(chunk.length, n - filled);
        chunk.copy(out, filled, 0, k);
        filled += k;
        if (k === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(k);
      }
    }
    this.length -= n;
    return out;
  }
}

export function encodeControlFrame(type: number, flags: number, body: Buffer): Buffer {
  if (body.length > MAX_FRAME_PAYLOAD) throw new SpdyProtocolError(`control frame too large: ${body.length}`);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + body.length);
  frame.writeUInt16BE(0x8000 | SPDY_VERSION, 0);
  frame.writeUInt16BE(type, 2);
  frame[4] = flags;
  frame.writeUIntBE(body.length, 5, 3);
  body.copy(frame, FRAME_HEADER_LENGTH);
  return frame;
}

/** The 8-byte header of a DATA frame; the payload follows it on the wire. */
export function encodeDataFrameHeader(streamId: number, flags: number, length: number): Buffer {
  if (length > MAX_FRAME_PAYLOAD) throw new SpdyProtocolError(`data frame too large: ${length}`);
  const header = Buffer.allocUnsafe(FRAME_HEADER_LENGTH);
  header.writeUInt32BE(streamId & 0x7fffffff, 0);
  header[4] = flags;
  header.writeUIntBE(length, 5, 3);
  return header;
}

export interface SynStream {
  streamId: number;
  associatedStreamId: number;
  priority: number;
  /** Still compressed. */
  headerBlock: Buffer;
}

export function parseSynStream(body: Buffer): SynStream {
  if (body.length < 10) throw new SpdyProtocolError(`SYN_STREAM too short: ${body.length} bytes`);
  return {
    streamId: body.readUInt32BE(0) & 0x7fffffff,
    associatedStreamId: body.readUInt32BE(4) & 0x7fffffff,
    priority: body[8]! >> 5,
    headerBlock: body.subarray(10),
  };
}

export function encodeSynStream(streamId: number, flags: number, headerBlock: Buffer): Buffer {
  const body = Buffer.alloc(10 + headerBlock.length);
  body.writeUInt32BE(streamId & 0x7fffffff, 0);
  headerBlock.copy(body, 10);
  return encodeControlFrame(FrameType.SynStream, flags, body);
}

/** SYN_REPLY and HEADERS: a stream id, then a compressed header block. */
export function parseStreamHeaders(body: Buffer): { streamId: number; headerBlock: Buffer } {
  if (body.length < 4) throw new SpdyProtocolError(`header frame too short: ${body.length} bytes`);
  return { streamId: body.readUInt32BE(0) & 0x7fffffff, headerBlock: body.subarray(4) };
}

export function encodeSynReply(streamId: number, flags: number, headerBlock: Buffer): Buffer {
  const body = Buffer.alloc(4 + headerBlock.length);
  body.writeUInt32BE(streamId & 0x7fffffff, 0);
  headerBlock.copy(body, 4);
  return encodeControlFrame(FrameType.SynReply, flags, body);
}

export function parseRstStream(body: Buffer): { streamId: number; status: number } {
  if (body.length < 8) throw new SpdyProtocolError(`RST_STREAM too short: ${body.length} bytes`);
  return { streamId: body.readUInt32BE(0) & 0x7fffffff, status: body.readUInt32BE(4) };
}

export function encodeRstStream(streamId: number, status: number): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt32BE(streamId & 0x7fffffff, 0);
  body.writeUInt32BE(status, 4);
  return encodeControlFrame(FrameType.RstStream, 0, body);
}

export function parseGoAway(body: Buffer): { lastGoodStreamId: number; status: number } {
  if (body.length < 4) throw new SpdyProtocolError(`GOAWAY too short: ${body.length} bytes`);
  return {
    lastGoodStreamId: body.readUInt32BE(0) & 0x7fffffff,
    status: body.length >= 8 ? body.readUInt32BE(4) : 0,
  };
}

export function encodeGoAway(lastGoodStreamId: number, status = 0): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt32BE(lastGoodStreamId & 0x7fffffff, 0);
  body.writeUInt32BE(status, 4);
  return encodeControlFrame(FrameType.GoAway, 0, body);
}

export function parsePing(body: Buffer): number {
  if (body.length < 4) throw new SpdyProtocolError(`PING too short: ${body.length} bytes`);
  return body.readUInt32BE(0);
}

export function encodePing(id: number): Buffer {
  const body = Buffer.alloc(4);
  body.writeUInt32BE(id >>> 0, 0);
  return encodeControlFrame(FrameType.Ping, 0, body);
}

/** The uncompressed name/value block: a count, then length-prefixed names and values. */
export function encodeHeaderBlock(headers: HeaderMap): Buffer {
  const entries = Object.entries(headers);
  const parts: Buffer[] = [];
  const count = Buffer.alloc(4);
  count.writeUInt32BE(entries.length);
  parts.push(count);
  for (const [name, value] of entries) {
    // Go's spdystream rejects upper-case header names.
    const n = Buffer.from(name.toLowerCase(), 'latin1');
    const v = Buffer.from(value, 'utf8');
    const nl = Buffer.alloc(4);
    nl.writeUInt32BE(n.length);
    const vl = Buffer.alloc(4);
    vl.writeUInt32BE(v.length);
    parts.push(nl, n, vl, v);
  }
  return Buffer.concat(parts);
}

export function decodeHeaderBlock(raw: Buffer): HeaderMap {
  const fail = (what: string) => new SpdyProtocolError(`malformed header block: ${what}`);
  if (raw.length < 4) throw fail('no entry count');
  const count = raw.readUInt32BE(0);
  let offset = 4;
  const headers: HeaderMap = {};
  const readString = (what: string, encoding: BufferEncoding): string => {
    if (offset + 4 > raw.length) throw fail(`${what} length past the end`);
    const length = raw.readUInt32BE(offset);
    offset += 4;
    if (offset + length > raw.length) throw fail(`${what} past the end`);
    const s = raw.toString(encoding, offset, offset + length);
    offset += length;
    return s;
  };
  for (let i = 0; i < count; i++) {
    const name = readString('name', 'latin1').toLowerCase();
    if (name === '') throw fail('empty header name');
    headers[name] = readString('value', 'utf8');
  }
  return headers;
}
