// A SPDY/3.1 client for tests, behaving like Go's spdystream on the API server's side: it opens
// odd-numbered streams with zlib-compressed (dictionary, sync flush) header blocks, never sends
// WINDOW_UPDATE, and records what the server sends back.
import type { Duplex } from 'node:stream';
import * as zlib from 'node:zlib';
import { SPDY3_DICTIONARY } from '../../../spdy/dictionary.js';
import {
  encodeDataFrameHeader,
  encodeHeaderBlock,
  encodePing,
  encodeRstStream,
  encodeSynStream,
  FLAG_FIN,
  FrameReader,
  FrameType,
  type HeaderMap,
  parseGoAway,
  parseRstStream,
  parseStreamHeaders,
  RstStatus,
} from '../../../spdy/frames.js';

export class ClientStream {
  readonly chunks: Buffer[] = [];
  remoteFin = false;
  resetStatus: number | undefined;
  replied = false;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly client: SpdyTestClient,
    readonly id: number,
  ) {}

  get text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }

  write(data: string | Buffer, fin = false): void {
    this.client.sendData(this.id, Buffer.from(data), fin);
  }

  end(): void {
    this.client.sendData(this.id, Buffer.alloc(0), true);
  }

  /** Resolves when the server has FIN'ed or reset the stream. */
  closed(): Promise<void> {
    return this.until(() => this.remoteFin || this.resetStatus !== undefined);
  }

  until(condition: () => boolean): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (condition()) resolve();
        else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }

  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

export class SpdyTestClient {
  private readonly reader = new FrameReader();
  private readonly deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY });
  private readonly inflate = zlib.createInflate({ dictionary: SPDY3_DICTIONARY });
  private deflated: Buffer[] = [];
  private nextId = 1;
  private readonly streams = new Map<number, ClientStream>();
  readonly pings: number[] = [];
  goAway: { lastGoodStreamId: number } | undefined;
  closed = false;
  private readonly closeWaiters: (() => void)[] = [];
  private headerQueue: Promise<void> = Promise.resolve();

  constructor(private readonly socket: Duplex) {
    this.deflate.on('data', (d: Buffer) => this.deflated.push(d));
    this.inflate.on('data', () => {}); // reply headers are empty; keep the context in step
    socket.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      for (let f = this.reader.next(); f; f = this.reader.next()) {
        if (!f.control) {
          const s = this.streams.get(f.streamId);
          if (!s) continue;
          if (f.data.length) s.chunks.push(f.data);
          if (f.flags & FLAG_FIN) s.remoteFin = true;
          s.notify();
          continue;
        }
        if (f.type === FrameType.SynReply) {
          const { streamId, headerBlock } = parseStreamHeaders(f.body);
          this.inflate.write(headerBlock);
          const s = this.streams.get(streamId);
          if (s) {
            s.replied = true;
            if (f.flags & FLAG_FIN) s.remoteFin = true;
            s.notify();
          }
        } else if (f.type === FrameType.RstStream) {
          const { streamId, status } = parseRstStream(f.body);
          const s = this.streams.get(streamId);
          if (s) {
            s.resetStatus = status;
            s.notify();
          }
        } else if (f.type === FrameType.Ping) {
          this.pings.push(f.body.readUInt32BE(0));
        } else if (f.type === FrameType.GoAway) {
          this.goAway = { lastGoodStreamId: parseGoAway(f.body).lastGoodStreamId };
        }
      }
    });
    socket.on('close', () => {
      this.closed = true;
      for (const s of this.streams.values()) s.notify();
      for (const w of this.closeWaiters.splice(0)) w();
    });
    socket.on('error', () => {});
  }

  /** Opens a stream; resolves once its SYN_STREAM is on the wire. */
  openStream(headers: HeaderMap, flags = 0): Promise<ClientStream> {
    const id = this.nextId;
    this.nextId += 2;
    const stream = new ClientStream(this, id);
    this.streams.set(id, stream);
    const sent = this.headerQueue.then(
      () =>
        new Promise<ClientStream>((resolve) => {
          this.deflate.write(encodeHeaderBlock(headers));
          this.deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
            const block = Buffer.concat(this.deflated);
            this.deflated = [];
            this.socket.write(encodeSynStream(id, flags, block));
            resolve(stream);
          });
        }),
    );
    this.headerQueue = sent.then(() => undefined);
    return sent;
  }

  sendData(id: number, data: Buffer, fin: boolean): void {
    this.socket.write(Buffer.concat([encodeDataFrameHeader(id, fin ? FLAG_FIN : 0, data.length), data]));
  }

  sendRst(id: number, status: number = RstStatus.Cancel): void {
    this.socket.write(encodeRstStream(id, status));
  }

  ping(id: number): void {
    this.socket.write(encodePing(id));
  }

  whenClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  destroy(): void {
    this.deflate.close();
    this.inflate.close();
    this.socket.destroy();
  }
}
