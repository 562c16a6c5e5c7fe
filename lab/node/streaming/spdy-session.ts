// The server side of a SPDY/3.1 connection as the Kubernetes streaming protocols use it: the peer (the
// API server, through Go's spdystream) opens streams, we accept them and exchange data.
//
// No flow control, deliberately, in either direction: spdystream never sends WINDOW_UPDATE, so a
// sender that honoured the 64 KiB initial window would stall. Inbound back-pressure is per
// connection instead: when a stream's reader falls behind, the whole socket pauses (spdystream does
// the same on its side).
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import type { Logger } from '../../../logging/logger.js';
import {
  type ControlFrame,
  encodeControlFrame,
  encodeDataFrameHeader,
  encodeGoAway,
  encodeRstStream,
  encodeSynReply,
  FLAG_FIN,
  FLAG_UNIDIRECTIONAL,
  FrameReader,
  FrameType,
  type HeaderMap,
  parseGoAway,
  parsePing,
  parseRstStream,
  parseStreamHeaders,
  parseSynStream,
  RstStatus,
  SPDY_VERSION,
  SpdyProtocolError,
} from '../../../spdy/frames.js';
import { HeaderBlockDecoder, HeaderBlockEncoder } from '../../../spdy/header-compression.js';

export interface SpdySessionOptions {
  log: Logger;
  /** The largest DATA payload sent in one frame. */
  maxDataFrame?: number;
  /** Bytes one stream buffers for its reader before the connection pauses. */
  streamHighWaterMark?: number;
}

/** What a stream needs from its session; kept narrow so the two classes stay decoupled. */
interface StreamTransport {
  sendReply(stream: SpdyStream, fin: boolean): void;
  /** Queues a DATA frame; false when the socket's buffer is full (wait for drain). */
  sendData(stream: SpdyStream, data: Buffer, fin: boolean): boolean;
  sendReset(stream: SpdyStream, status: number): void;
  whenDrained(callback: () => void): void;
  pauseFor(stream: SpdyStream): void;
  resumeFor(stream: SpdyStream): void;
  forget(stream: SpdyStream): void;
  isOpen(): boolean;
}

const EMPTY = Buffer.alloc(0);

export class SpdyStream extends Duplex {
  readonly id: number;
  readonly headers: HeaderMap;
  private replied = false;
  private localFin: boolean;
  private remoteFin = false;
  private wasReset = false;

  constructor(
    private readonly transport: StreamTransport,
    id: number,
    headers: HeaderMap,
    unidirectional: boolean,
    highWaterMark: number,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: highWaterMark });
    this.id = id;
    this.headers = headers;
    this.localFin = unidirectional;
  }

  get isReset(): boolean {
    return this.wasReset;
  }

  /** Accepts the stream (SYN_REPLY). The session does this after 'stream' unless the handler reset it. */
  reply(): void {
    if (this.replied || this.wasReset) return;
    this.replied = true;
    this.transport.sendReply(this, false);
  }

  /** Tears down both directions at once (RST_STREAM). */
  reset(status: number = RstStatus.Cancel): void {
    if (this.wasReset) return;
    this.wasReset = true;
    this.transport.sendReset(this, status);
    this.transport.forget(this);
    this.destroy();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.wasReset || this.localFin) {
      callback(new Error(`stream ${this.id} is ${this.wasReset ? 'reset' : 'closed for writing'}`));
      return;
    }
    this.reply();
    if (this.transport.sendData(this, chunk, false)) callback();
    else this.transport.whenDrained(() => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.wasReset && !this.localFin) {
      this.reply();
      this.localFin = true;
      this.transport.sendData(this, EMPTY, true);
      this.forgetIfDone();
    }
    callback();
  }

  override _read(): void {
    this.transport.resumeFor(this);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Destroyed by us before both sides finished: tell the peer, or it waits forever.
    if (!this.wasReset && !(this.localFin && this.remoteFin) && this.transport.isOpen()) {
      this.wasReset = true;
      this.transport.sendReset(this, RstStatus.Cancel);
    }
    this.transport.forget(this);
    callback(error);
  }

  /** Called by the session. */
  receiveData(data: Buffer): void {
    if (this.remoteFin || this.wasReset || this.destroyed) return;
    if (!this.push(data)) this.transport.pauseFor(this);
  }

  /** Called by the session. */
  receiveFin(): void {
    if (this.remoteFin) return;
    this.remoteFin = true;
    this.push(null);
    this.forgetIfDone();
  }

  /** Called by the session: the peer reset the stream, or the connection is gone. */
  receiveReset(): void {
    if (this.wasReset) return;
    this.wasReset = true;
    this.remoteFin = true;
    this.destroy();
  }

  private forgetIfDone(): void {
    if (this.localFin && this.remoteFin) this.transport.forget(this);
  }
}

export class SpdySession extends EventEmitter {
  private readonly reader = new FrameReader();
  private readonly encoder = new HeaderBlockEncoder();
  private readonly decoder = new HeaderBlockDecoder();
  private readonly streams = new Map<number, SpdyStream>();
  private readonly pausedBy = new Set<SpdyStream>();
  private drainWaiters: Array<() => void> = [];
  private lastRemoteStreamId = 0;
  private decodingHeaders = false;
  private goneAway = false;
  private closed = false;
  private readonly log: Logger;
  private readonly maxDataFrame: number;
  private readonly streamHighWaterMark: number;
  private readonly transport: StreamTransport;

  constructor(
    private readonly socket: Duplex & { setNoDelay?: (noDelay?: boolean) => unknown },
    options: SpdySessionOptions,
  ) {
    super();
    this.log = options.log;
    this.maxDataFrame = options.maxDataFrame ?? 128 * 1024;
    this.streamHighWaterMark = options.streamHighWaterMark ?? 256 * 1024;
    this.transport = {
      sendReply: (s, fin) => this.write(encodeSynReply(s.id, fin ? FLAG_FIN : 0, this.encoder.encode({}))),
      sendData: (s, data, fin) => this.writeData(s.id, data, fin),
      sendReset: (s, status) => this.write(encodeRstStream(s.id, status)),
      whenDrained: (callback) => {
        if (this.closed) callback();
        else this.drainWaiters.push(callback);
      },
      pauseFor: (s) => this.pauseFor(s),
      resumeFor: (s) => this.resumeFor(s),
      forget: (s) => {
        if (this.streams.get(s.id) === s) this.streams.delete(s.id);
        this.resumeFor(s);
      },
      isOpen: () => !this.closed,
    };
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      this.processFrames();
    });
    socket.on('drain', () => this.flushDrainWaiters());
    // The peer finished sending: a SPDY connection has no use for half-open.
    socket.on('end', () => socket.end());
    socket.on('error', (err: Error) => this.log.debug('connection error', { error: err }));
    socket.on('close', () => this.onClose());
  }

  override on(event: 'stream', listener: (stream: SpdyStream) => void): this;
  override on(event: 'close', listener: () => void): this;
  override on(event: 'goaway', listener: (lastGoodStreamId: number, status: number) => void): this;
  override on(event: string, listener: Parameters<EventEmitter['on']>[1]): this {
    return super.on(event, listener);
  }

  /** Streams still open. */
  get streamCount(): number {
    return this.streams.size;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Graceful end: GOAWAY, then close the connection once queued frames are written. */
  close(): void {
    if (this.closed) return;
    if (!this.goneAway) {
      this.goneAway = true;
      this.write(encodeGoAway(this.lastRemoteStreamId));
    }
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private write(frame: Buffer): boolean {
    if (this.closed || this.socket.destroyed) return true;
    return this.socket.write(frame);
  }

  private writeData(streamId: number, data: Buffer, fin: boolean): boolean {
    if (this.closed || this.socket.destroyed) return true;
    let offset = 0;
    let ok = true;
    do {
      const n = Math.min(this.maxDataFrame, data.length - offset);
      const last = offset + n >= data.length;
      ok = this.socket.write(encodeDataFrameHeader(streamId, last && fin ? FLAG_FIN : 0, n));
      if (n > 0) ok = this.socket.write(n === data.length ? data : data.subarray(offset, offset + n));
      offset += n;
    } while (offset < data.length);
    return ok;
  }

  private flushDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  private processFrames(): void {
    try {
      while (!this.decodingHeaders && !this.closed) {
        const frame = this.reader.next();
        if (!frame) return;
        if (!frame.control) {
          const stream = this.streams.get(frame.streamId);
          // DATA for a stream that is gone (reset by one side): dropped, as spdystream does.
          if (!stream) continue;
          if (frame.data.length > 0) stream.receiveData(frame.data);
          if (frame.flags & FLAG_FIN) stream.receiveFin();
          continue;
        }
        if (frame.version !== SPDY_VERSION) {
          throw new SpdyProtocolError(`peer speaks SPDY version ${frame.version}, not ${SPDY_VERSION}`);
        }
        this.handleControl(frame);
      }
    } catch (err) {
      this.log.warn('dropping SPDY connection', { error: err });
      this.destroy();
    }
  }

  /** Every frame that carries a header block goes through the shared decoder, in order. */
  private withHeaders(block: Buffer, then: (headers: HeaderMap) => void): void {
    this.decodingHeaders = true;
    this.decoder.decode(block).then(
      (headers) => {
        this.decodingHeaders = false;
        if (this.closed) return;
        then(headers);
        this.processFrames();
      },
      (err: unknown) => {
        this.decodingHeaders = false;
        this.log.warn('dropping SPDY connection', { error: err });
        this.destroy();
      },
    );
  }

  private handleControl(frame: ControlFrame): void {
    switch (frame.type) {
      case FrameType.SynStream: {
        const syn = parseSynStream(frame.body);
        this.withHeaders(syn.headerBlock, (headers) => this.openStream(syn.streamId, frame.flags, headers));
        return;
      }
      case FrameType.SynReply:
      case FrameType.Headers: {
        // We open no streams and expect no trailers, but the block still advances the zlib context.
        const { headerBlock } = parseStreamHeaders(frame.body);
        this.withHeaders(headerBlock, () => {});
        return;
      }
      case FrameType.RstStream: {
        const { streamId } = parseRstStream(frame.body);
        const stream = this.streams.get(streamId);
        if (stream) {
          this.streams.delete(streamId);
          this.resumeFor(stream);
          stream.receiveReset();
        }
        return;
      }
      case FrameType.Ping: {
        const id = parsePing(frame.body);
        // Client pings have odd ids: echo them. We send none, so even ids are not ours to answer.
        if (id % 2 === 1) this.write(encodeControlFrame(FrameType.Ping, 0, Buffer.from(frame.body)));
        return;
      }
      case FrameType.GoAway: {
        const { lastGoodStreamId, status } = parseGoAway(frame.body);
        this.goneAway = true;
        this.emit('goaway', lastGoodStreamId, status);
        return;
      }
      case FrameType.Settings:
      case FrameType.WindowUpdate:
      case FrameType.Noop:
        return; // no flow control, no limits to honour
      default:
        this.log.debug('ignoring unknown control frame', { type: frame.type });
    }
  }

  private openStream(id: number, flags: number, headers: HeaderMap): void {
    // Client-initiated streams have odd, increasing ids.
    if (id % 2 === 0 || id <= this.lastRemoteStreamId) {
      this.write(encodeRstStream(id, RstStatus.ProtocolError));
      return;
    }
    this.lastRemoteStreamId = id;
    if (this.goneAway) {
      this.write(encodeRstStream(id, RstStatus.RefusedStream));
      return;
    }
    const stream = new SpdyStream(
      this.transport,
      id,
      headers,
      (flags & FLAG_UNIDIRECTIONAL) !== 0,
      this.streamHighWaterMark,
    );
    this.streams.set(id, stream);
    this.emit('stream', stream);
    // The reply must precede any DATA on the stream: spdystream drops DATA for an unanswered stream.
    if (!stream.isReset) stream.reply();
    if (flags & FLAG_FIN) stream.receiveFin();
  }

  private pauseFor(stream: SpdyStream): void {
    if (this.pausedBy.has(stream)) return;
    this.pausedBy.add(stream);
    if (this.pausedBy.size === 1) this.socket.pause();
  }

  private resumeFor(stream: SpdyStream): void {
    if (!this.pausedBy.delete(stream)) return;
    if (this.pausedBy.size === 0 && !this.closed) this.socket.resume();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.decoder.close();
    this.flushDrainWaiters();
    const open = [...this.streams.values()];
    this.streams.clear();
    this.pausedBy.clear();
    for (const stream of open) stream.receiveReset();
    this.emit('close');
  }
}
