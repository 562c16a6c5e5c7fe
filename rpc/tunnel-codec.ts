// The wire codec of the Tunnel RPC's messages: the same bytes as the generated TunnelMessage codec
// (rpc/gen/manager.ts; the unit test checks both ways), without its copies of the DATA payload.
// The generated code copies a payload three times to encode it (writer, finish(), Buffer.from) and once
// to decode it; at 1 MiB per message that allocation churn made garbage collection the manager's largest
// cost. Here DATA is copied once when encoding and not at all when decoding (the payload is a view of the
// buffer grpc-js assembled for that one message). Everything except DATA's framing still goes through the
// generated code. A DATA message's encoding also carries its gRPC frame around it (rpc/grpc-framing.ts), so
// grpc-js sends it without its own copy; a received DATA message keeps the frame it came in, so the
// manager's relay forwards it without a new one.
import { BinaryReader } from '@bufbuild/protobuf/wire';
import { StreamInfo, TunnelCode, TunnelMessage } from './gen/manager.js';
import { adoptFrame, HEADER_BYTES as FRAME_HEADER_BYTES, frameAround, framedBuffer } from './grpc-framing.js';

const TAG_CODE = (1 << 3) | 0; // varint
const TAG_DATA = (2 << 3) | 2; // length-delimited
const TAG_OPEN = (3 << 3) | 2;
const TAG_ERROR = (4 << 3) | 2;

function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

function writeVarint(buf: Buffer, offset: number, n: number): number {
  while (n >= 0x80) {
    buf[offset++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[offset++] = n;
  return offset;
}

/**
 * What this codec remembers of a message it made, kept on the message under symbols (as grpc-framing.ts
 * keeps a frame; WeakMaps cost a set per message in V8's ephemeron tables, 6-8 % of a relay's CPU per small
 * message):
 *   ENCODED      the bytes a decoded message came from, or an encoded one was built in. The manager's relay
 *                forwards decoded messages unchanged, so their encoding is already at hand: reusing it
 *                saves the relay a 1 MiB allocation and copy per message. Checked against the message's
 *                fields before use, so a changed message or a copy with other fields is encoded anew.
 *   READ_MEMORY  the read memory a DataReader's or encodedDataMessage's message lies in (dataWritten); the
 *                claim names its message, so a copy of the message (a spread) cannot return it twice.
 */
const ENCODED = Symbol('encoded as');
const READ_MEMORY = Symbol('read memory');
interface Encoded {
  bytes: Buffer;
  code: number;
  data: Buffer;
  error: string;
}
interface Remembered extends TunnelMessage {
  [ENCODED]?: Encoded;
  [READ_MEMORY]?: { memory: ReadMemory; of: TunnelMessage | undefined };
}

export function serializeTunnelMessage(m: TunnelMessage): Buffer {
  const known = (m as Remembered)[ENCODED];
  if (
    known &&
    known.code === m.code &&
    known.data === m.data &&
    known.error === m.error &&
    m.open === undefined
  )
    return known.bytes;
  // Only a plain DATA message (no other field set) takes the fast path; the rest is rare and small.
  if (m.data.length === 0 || m.open !== undefined || m.error !== '' || m.code < 0) {
    const out = TunnelMessage.encode(m).finish();
    return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  }
  const codeLength = m.code === 0 ? 0 : 1 + varintLength(m.code);
  const length = codeLength + 1 + varintLength(m.data.length) + m.data.length;
  const buf = Buffer.allocUnsafe(length);
  let o = 0;
  if (codeLength > 0) {
    buf[o++] = TAG_CODE;
    o = writeVarint(buf, o, m.code);
  }
  buf[o++] = TAG_DATA;
  o = writeVarint(buf, o, m.data.length);
  buf.set(m.data, o);
  return buf;
}

/**
 * A DATA message built from socket chunks straight into its wire encoding: the payload is copied once, and
 * serializeTunnelMessage hands grpc-js the prepared bytes. With `reuse` its memory comes from, and goes back
 * to, the spare memory of its size once the message is reported written (dataWritten): for the full-sized
 * messages of a bulk transfer, which otherwise left an allocation per MiB to the garbage collector.
 */
export function encodedDataMessage(chunks: readonly Buffer[], length: number, reuse = false): TunnelMessage {
  const header = 1 + 1 + 1 + varintLength(length); // code tag + DATA (2) + data tag + length
  const memory = reuse ? takeMemory(FRAME_HEADER_BYTES + header + length) : undefined;
  const bytes = memory ? frameAround(memory) : framedBuffer(header + length);
  let o = 0;
  bytes[o++] = TAG_CODE;
  bytes[o++] = TunnelCode.DATA;
  bytes[o++] = TAG_DATA;
  o = writeVarint(bytes, o, length);
  for (const c of chunks) {
    bytes.set(c, o);
    o += c.length;
  }
  const m: Remembered = {
    code: TunnelCode.DATA,
    data: bytes.subarray(header),
    open: undefined,
    error: '',
  };
  m[ENCODED] = { bytes, code: m.code, data: m.data, error: '' };
  if (memory) m[READ_MEMORY] = { memory: { buffer: memory, unsent: 1, current: false }, of: m };
  return m;
}

export function deserializeTunnelMessage(buf: Buffer): TunnelMessage {
  const reader = new BinaryReader(buf);
  const m: Remembered = {
    code: TunnelCode.TUNNEL_UNSPECIFIED,
    data: Buffer.alloc(0),
    open: undefined,
    error: '',
  };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    switch (tag) {
      case TAG_CODE:
        m.code = reader.int32();
        break;
      case TAG_DATA: {
        const bytes = reader.bytes();
        m.data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        break;
      }
      case TAG_OPEN:
        m.open = StreamInfo.decode(reader, reader.uint32());
        break;
      case TAG_ERROR:
        m.error = reader.string();
        break;
      default:
        if ((tag & 7) === 4 || tag === 0) return m;
        reader.skip(tag & 7);
    }
  }
  // Only DATA is worth remembering (and only it is reused: OPEN and errors are small and rare).
  if (m.data.length > 0 && m.open === undefined) {
    m[ENCODED] = { bytes: buf, code: m.code, data: m.data, error: m.error };
    adoptFrame(buf);
  }
  return m;
}

/** Room in front of a read for its DATA message's headers: the gRPC frame, code tag, code, data tag, length. */
const READ_HEADROOM = FRAME_HEADER_BYTES + 3 + 4;
/** The smallest allocation for reads. */
const MIN_READ_BYTES = 16 << 10;
/** Below this much left, the next read gets a new allocation. */
const MIN_LEFT_BYTES = 1 << 10;

/**
 * Socket reads straight into DATA messages, for a socket created with net's `onread` option: each read lands
 * in memory with room in front for its message's headers, so one read becomes one DATA message, gRPC frame
 * included, without a copy (rpc/grpc-framing.ts). The kernel coalesces: a read takes everything the socket
 * holds, up to the memory offered (at most maxBytes). The memory is allocated per socket, sized from its last
 * read (twice it, at least 16 KiB, at most maxBytes), and what a read leaves is offered to the next one while
 * it can take twice the last read: a
 * socket of small requests takes a 16 KiB allocation per ~16 KiB, a bulk one about a byte per byte read
 * (Node's own reads allocate 64 KiB each, which the coalescer then copied into the message). Memory whose
 * messages were all written (dataWritten) and that no read is offered any more is kept for the next reads
 * (a few per size), so a bulk transfer reuses its memory instead of leaving it to the garbage collector.
 */
interface ReadMemory {
  buffer: Buffer;
  /** Messages in it that were sent but not yet reported written (dataWritten). */
  unsent: number;
  /** The reader still offers it to reads. */
  current: boolean;
}

/** Read memory that no message refers to any more, by size: the next allocations of that size take it. */
const spareMemory = new Map<number, Buffer[]>();
const SPARE_PER_SIZE = 8;

function takeMemory(size: number): Buffer {
  return spareMemory.get(size)?.pop() ?? Buffer.allocUnsafe(size);
}

function maybeSpare(memory: ReadMemory): void {
  if (memory.current || memory.unsent > 0) return;
  const list = spareMemory.get(memory.buffer.length) ?? [];
  spareMemory.set(memory.buffer.length, list);
  if (list.length < SPARE_PER_SIZE) list.push(memory.buffer);
}

/**
 * A message of a DataReader was written and nothing refers to its memory any more (grpc-js's write callback
 * of a server call): once all messages in a read memory are, the memory serves another read. A message never
 * reported leaves its memory to the garbage collector, as any buffer.
 */
export function dataWritten(m: TunnelMessage): void {
  const claim = (m as Remembered)[READ_MEMORY];
  if (claim?.of !== m) return;
  claim.of = undefined;
  claim.memory.unsent--;
  maybeSpare(claim.memory);
}

/**
 * Memory for received frames that came in pieces (tunnel/framed-call.ts): a byte stream delivers 16 KiB
 * (TLS records) or 64 KiB (socket reads) at a time, and a DATA message of a bulk transfer is up to 1 MiB,
 * so nearly every one of them was joined into a new allocation: half of what a receiving end allocated per
 * byte, and so half of its full garbage collections (V8 starts one per 64 MiB of new external memory).
 * Joined frames of JOIN_MIN_BYTES and more take memory in size classes of JOIN_CLASS_BYTES; once a flow
 * wrote a message's DATA to its socket (receivedWritten) the memory serves the next frame of that class,
 * JOIN_SPARE_BYTES kept in all. Data never reported written leaves its memory to the garbage collector.
 */
const JOIN_MIN_BYTES = 64 << 10;
const JOIN_CLASS_BYTES = 64 << 10;
const JOIN_SPARE_BYTES = 8 << 20;
const spareJoins = new Map<number, Buffer[]>();
let spareJoinBytes = 0;
/** On a received DATA payload that is a view of join memory: that memory (a symbol, as ENCODED above). */
const JOIN = Symbol('join memory');
type Joined = Buffer & { [JOIN]?: Buffer };

/** Memory for joining a frame of `n` bytes, or undefined when it is too small to be worth pooling. */
export function joinMemory(n: number): Buffer | undefined {
  if (n < JOIN_MIN_BYTES) return undefined;
  const size = Math.ceil(n / JOIN_CLASS_BYTES) * JOIN_CLASS_BYTES;
  const spare = spareJoins.get(size)?.pop();
  if (spare) {
    spareJoinBytes -= size;
    return spare;
  }
  return Buffer.allocUnsafe(size);
}

/** `m` was decoded from join memory: its DATA payload returns it once written (receivedWritten). */
export function adoptJoined(m: TunnelMessage, memory: Buffer): void {
  if (m.data.length > 0 && m.data.buffer === memory.buffer) (m.data as Joined)[JOIN] = memory;
}

/** Whether `data` (a received DATA payload) returns memory once written: the writer calls receivedWritten. */
export function isJoined(data: Buffer): boolean {
  return (data as Joined)[JOIN] !== undefined;
}

/** A received DATA payload was written and nothing refers to it any more: its memory serves the next join. */
export function receivedWritten(data: Buffer): void {
  const memory = (data as Joined)[JOIN];
  if (!memory) return;
  (data as Joined)[JOIN] = undefined;
  if (spareJoinBytes + memory.length > JOIN_SPARE_BYTES) return;
  const list = spareJoins.get(memory.length) ?? [];
  spareJoins.set(memory.length, list);
  list.push(memory);
  spareJoinBytes += memory.length;
}

export class DataReader {
  private memory: Buffer = Buffer.alloc(0);
  private record: ReadMemory | undefined;
  /** Where the next read's headroom starts in `memory`. */
  private next = 0;
  /** The memory offered to the read in progress. */
  private offered: Buffer = this.memory;
  private lastRead = 0;

  constructor(readonly maxBytes: number) {
    if (maxBytes < 1) throw new RangeError('maxBytes must be positive');
  }

  /** The memory for the next read (net's onread.buffer). */
  readonly region = (): Buffer => {
    // The rest of the memory serves the next read while it can take twice the last one.
    const want = Math.min(this.maxBytes, Math.max(MIN_LEFT_BYTES, 2 * this.lastRead));
    if (this.memory.length - this.next - READ_HEADROOM < want) {
      // Sizes in powers of two, so that spare memory fits the next reads.
      const size = Math.min(
        this.maxBytes,
        2 ** Math.ceil(Math.log2(Math.max(MIN_READ_BYTES, 2 * this.lastRead))),
      );
      // The memory offered before was read into (this runs after each read): the socket no longer has it.
      if (this.record) {
        this.record.current = false;
        maybeSpare(this.record);
      }
      this.memory = takeMemory(READ_HEADROOM + size);
      this.record = { buffer: this.memory, unsent: 0, current: true };
      this.next = 0;
    }
    const start = this.next + READ_HEADROOM;
    this.offered = this.memory.subarray(start, start + Math.min(this.maxBytes, this.memory.length - start));
    return this.offered;
  };

  /** `n` bytes were read into `into` (the memory region() offered last): their DATA message, a view of it. */
  commit(n: number, into: Uint8Array): TunnelMessage {
    if (into !== this.offered) throw new Error('DataReader: a read into memory it did not offer last');
    this.lastRead = n;
    const start = into.byteOffset - this.memory.byteOffset;
    const header = 3 + varintLength(n);
    const frameStart = start - header - FRAME_HEADER_BYTES;
    const bytes = frameAround(this.memory.subarray(frameStart, start + n));
    let o = 0;
    bytes[o++] = TAG_CODE;
    bytes[o++] = TunnelCode.DATA;
    bytes[o++] = TAG_DATA;
    writeVarint(bytes, o, n);
    this.next = start + n;
    const m: Remembered = {
      code: TunnelCode.DATA,
      data: bytes.subarray(header),
      open: undefined,
      error: '',
    };
    m[ENCODED] = { bytes, code: m.code, data: m.data, error: '' };
    this.record!.unsent++;
    m[READ_MEMORY] = { memory: this.record!, of: m };
    return m;
  }
}
