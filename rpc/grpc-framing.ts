// gRPC frames every message with 5 bytes (a compressed flag and the length) and grpc-js builds each frame by
// allocating a new buffer and copying the serialized message into it: on the client in its identity
// compression handler, on the server in serializeMessage. For the tunnel's DATA messages (up to 1 MiB, on
// every hop) that is one more allocation and copy of the payload per message. Here a serializer can hand
// grpc-js a message that already has its frame header in front of it (in the same memory): grpc-js then
// sends that frame as it is.
//
//   framedBuffer(length)  a message buffer with room for the header in front, the header written;
//   frameAround(frame)    the same in memory the caller laid out (the first 5 bytes are the header's);
//   adoptFrame(message)   a message grpc-js received (its header precedes it in the frame it came in),
//                         so relaying it needs no new frame either;
//   frameOf(message)      the frame of a message registered by either (what the patched grpc-js sends).
//
// This reaches into grpc-js internals (pinned at 1.14.7): the prototype of the compression filter's identity
// handler (writeMessage) and BaseServerInterceptingCall.prototype.serializeMessage. rpc/grpc-framing.test.ts
// fails if an upgrade moves them; when they are not where 1.14 keeps them nothing is patched and grpc-js
// copies as before.
import * as compression from '@grpc/grpc-js/build/src/compression-filter.js';
import * as serverCalls from '@grpc/grpc-js/build/src/server-interceptors.js';

/** gRPC's frame header: a compressed flag and the message's length. */
export const HEADER_BYTES = 5;
/** Below this a message may share its memory with others (Buffer's pool): never adopted. */
const ADOPT_MIN_BYTES = 4096;

/**
 * A registered message's frame, kept on the message itself under a symbol: a WeakMap, as this was, costs a
 * set per message in V8's ephemeron tables and in every scavenge after (6-8 % of a relay's CPU per small
 * message, bench/vif's keep-alive rounds). A copy or a view of a message is another object, unregistered.
 */
const FRAME = Symbol('gRPC frame');
type Framed = Buffer & { [FRAME]?: Buffer };

function writeHeader(frame: Buffer, length: number): void {
  frame[0] = 0; // not compressed
  frame.writeUInt32BE(length, 1);
}

/** A buffer of `length` bytes for a message, with its gRPC frame (header written) around it. */
export function framedBuffer(length: number): Buffer {
  return frameAround(Buffer.allocUnsafe(HEADER_BYTES + length));
}

/**
 * The message inside `frame` (all of it but the first 5 bytes), with the header written there and the frame
 * registered: for a caller that laid out the message in its own memory.
 */
export function frameAround(frame: Buffer): Buffer {
  const length = frame.length - HEADER_BYTES;
  writeHeader(frame, length);
  const message: Framed = frame.subarray(HEADER_BYTES);
  message[FRAME] = frame;
  return message;
}

/**
 * Registers the frame a received message came in (grpc-js hands the deserializer a view that starts just
 * after its 5-byte header), when that header is there and the memory is the message's own. Returns whether
 * it did.
 */
export function adoptFrame(message: Buffer): boolean {
  if (message.length < ADOPT_MIN_BYTES || message.byteOffset < HEADER_BYTES) return false;
  const frame = Buffer.from(message.buffer, message.byteOffset - HEADER_BYTES, message.length + HEADER_BYTES);
  if (frame[0] !== 0 || frame.readUInt32BE(1) !== message.length) return false;
  (message as Framed)[FRAME] = frame;
  return true;
}

/** The whole frame of a message from framedBuffer or adoptFrame; undefined for any other. */
export function frameOf(message: Buffer): Buffer | undefined {
  return (message as Framed)[FRAME];
}

interface Handler {
  writeMessage(message: Buffer, compress: boolean): Promise<Buffer>;
}
interface ServerCall {
  handler: { serialize(value: unknown): Buffer };
  serializeMessage(value: unknown): Buffer;
}

/**
 * Whether grpc-js sends registered frames as they are (false: its internals moved, it copies as before),
 * and how many it sent so (for tests).
 */
export const framedSends: { client: boolean; server: boolean; sent: number } = {
  client: false,
  server: false,
  sent: 0,
};

function patchClient(): void {
  const Filter = (
    compression as unknown as {
      CompressionFilter?: new (o: object, s: object) => { sendCompression?: Handler };
    }
  ).CompressionFilter;
  if (typeof Filter !== 'function') return;
  const identity = new Filter({}, {}).sendCompression;
  const proto = identity && (Object.getPrototypeOf(identity) as Handler);
  if (!proto || typeof proto.writeMessage !== 'function') return;
  const original = proto.writeMessage;
  // The identity handler never compresses: its frames always say "not compressed", as ours do.
  proto.writeMessage = function (this: Handler, message: Buffer, compress: boolean): Promise<Buffer> {
    const frame = frameOf(message);
    if (!frame) return original.call(this, message, compress);
    framedSends.sent++;
    return Promise.resolve(frame);
  };
  framedSends.client = true;
}

function patchServer(): void {
  const Call = (serverCalls as unknown as { BaseServerInterceptingCall?: { prototype: ServerCall } })
    .BaseServerInterceptingCall;
  const proto = Call?.prototype;
  if (!proto || typeof proto.serializeMessage !== 'function') return;
  // grpc-js servers do not compress responses: the same frame as its own serializeMessage builds.
  proto.serializeMessage = function (this: ServerCall, value: unknown): Buffer {
    const message = this.handler.serialize(value);
    const framed = frameOf(message);
    if (framed) {
      framedSends.sent++;
      return framed;
    }
    const frame = Buffer.allocUnsafe(HEADER_BYTES + message.byteLength);
    writeHeader(frame, message.byteLength);
    message.copy(frame, HEADER_BYTES);
    return frame;
  };
  framedSends.server = true;
}

patchClient();
patchServer();
