// Port-forward through the Kubernetes API server, the way kubectl does it: an HTTPS request to
// pods/NAME/portforward upgraded to SPDY/3.1 (portforward.k8s.io), then per forwarded connection an
// "error" and a "data" stream sharing a requestid. Every API server and kubelet speaks this (the
// WebSocket variants are newer and kubelets differ in which they accept), and it needs nothing from the
// cluster but the user's RBAC for pods/portforward.
//
// Backpressure both ways: a local socket that cannot take more pauses the SPDY connection, and a full
// SPDY connection pauses the local socket. No SPDY flow control (Go's spdystream never sends
// WINDOW_UPDATE, so honouring windows would stall).
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import type { V1Pod, V1PodList, V1Service } from '@kubernetes/client-node';
import type { Logger } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
// The SPDY/3.1 framing and header compression are shared with the lab's kubelet (server side).
import {
  encodeControlFrame,
  encodeDataFrameHeader,
  encodePing,
  encodeRstStream,
  encodeSynStream,
  FLAG_FIN,
  FrameReader,
  FrameType,
  parseGoAway,
  parsePing,
  parseRstStream,
  parseStreamHeaders,
  RstStatus,
} from '../spdy/frames.js';
import { HeaderBlockDecoder, HeaderBlockEncoder } from '../spdy/header-compression.js';
import { FlowConnectionPool } from '../tunnel/flow-pool.js';
import { agreesWithFlowMagic, type FlowWindowGroup } from '../tunnel/framed-call.js';
import type { TunnelStream } from '../tunnel/stream.js';
import { DEFAULT_MANAGER_NAMESPACE, MANAGER_SERVICE } from './annotations.js';

const MAX_DATA_FRAME = 128 * 1024;
/**
 * Bytes a side may hold unwritten before it stops reading the other. A socket's own mark (16 KiB) paused
 * the reader after nearly every TLS record and cost an event-loop round trip per pause on bulk transfers;
 * this still bounds what one forwarded connection buffers.
 */
const MAX_BUFFERED = 1 << 20;

/** Writes to `to`; when `to` holds more than MAX_BUFFERED, pauses `from` until `to` has drained. */
function relayWrite(from: Duplex, to: Duplex, data: Buffer): void {
  to.write(data);
  if (to.writableLength > MAX_BUFFERED && !from.isPaused()) {
    from.pause();
    to.once('drain', () => from.resume());
  }
}
const UPGRADE_TIMEOUT_MS = 15_000;
/**
 * A port-forward with open streams is pinged this often; one that answered pings before and then leaves
 * one unanswered for PING_TIMEOUT_MS is dead.
 */
const PING_INTERVAL_MS = 1_000;
const PING_TIMEOUT_MS = 5_000;
/**
 * How long the kubelet may take to accept a new stream (its SYN_REPLY: a round trip to the node, through a
 * remote API server too). Past it, the connection takes no new stream (see taint()); a stream mistaken for
 * unaccepted (a reply stuck behind a transfer in bulk on a slow link) costs its flow a retry on a new one.
 */
const STREAM_REPLY_TIMEOUT_MS = 2_000;

/**
 * How a PortForwardSession tells that its peer is gone (PING_INTERVAL_MS, PING_TIMEOUT_MS) or takes no new
 * stream (STREAM_REPLY_TIMEOUT_MS).
 */
export interface Liveness {
  pingIntervalMs: number;
  pingTimeoutMs: number;
  streamReplyTimeoutMs?: number;
}
/** How long a ready connection of PodStreams waits unused before it is dropped. */
const SPARE_MAX_AGE_MS = 20_000;
/**
 * A session whose streams carried this many bytes (both ways) within BUSY_WINDOW_MS, 10 MiB/s, carries a
 * transfer in bulk: new connections go on another session. Behind a bulk flow, a connection sharing its
 * session waits for what the flow has in flight (up to its window, tunnel/framed-call.ts WINDOW_BYTES:
 * ~12 ms at 170 MiB/s, measured as head-of-line by bench/round-trip); on a TCP connection of its own it does
 * not. Sequential requests and 50 connections' keep-alive traffic stay far below (~0.3 and ~3 MB/s).
 */
const BUSY_BYTES = 2 << 20;
const BUSY_WINDOW_MS = 200;
/** Sessions to one target at most; when every one is busy, a new connection takes the least busy. */
const MAX_SHARED_SESSIONS = 4;
/** A session beyond the first that has had no stream this long is closed. */
const EXTRA_SESSION_IDLE_MS = 5_000;

/**
 * The user's access to the API server: a KubeConfig, or what the root daemon builds from the access the
 * user daemon gave it (kube/cluster-access.ts), which loads no Kubernetes client.
 */
export interface ApiAccess {
  getCurrentCluster(): { server: string } | null;
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
}

/** `apiPath` on the access's API server (after the server URL's own path, if it has one). */
function apiUrl(kc: ApiAccess, apiPath: string): URL {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new UsageError('the kubeconfig has no current cluster: pass --context');
  return new URL(cluster.server.replace(/\/+$/, '') + apiPath);
}

const API_GET_TIMEOUT_MS = 10_000;

/** An API request the server answered with an error status, its Status message. */
class ApiStatusError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** GETs an API path as JSON with the access's credentials. */
async function apiGet<T>(kc: ApiAccess, apiPath: string): Promise<T> {
  const url = apiUrl(kc, apiPath);
  const opts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  return new Promise<T>((resolve, reject) => {
    const request = (url.protocol === 'https:' ? https : http).request(url, opts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(body);
        } catch {
          parsed = undefined;
        }
        if (res.statusCode === 200 && parsed !== undefined) resolve(parsed as T);
        else
          reject(
            new ApiStatusError(
              res.statusCode ?? 0,
              (parsed as { message?: string } | undefined)?.message ??
                (body.trim() || `HTTP ${res.statusCode}`),
            ),
          );
      });
    });
    request.setTimeout(API_GET_TIMEOUT_MS, () =>
      request.destroy(new Error(`the API server did not answer within ${API_GET_TIMEOUT_MS / 1000} s`)),
    );
    request.on('error', (e: Error & { code?: string }) =>
      reject(new Error(e.code && !e.message.includes(e.code) ? `${e.message} (${e.code})` : e.message)),
    );
    request.end();
  });
}

/** Opens the SPDY connection for one port-forward session to a pod. */
async function upgrade(kc: ApiAccess, namespace: string, pod: string, port: number): Promise<Duplex> {
  const url = apiUrl(
    kc,
    `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/portforward`,
  );
  url.searchParams.set('ports', String(port));
  const opts: https.RequestOptions = {
    method: 'POST',
    headers: {
      Connection: 'Upgrade',
      Upgrade: 'SPDY/3.1',
      'X-Stream-Protocol-Version': 'portforward.k8s.io',
    },
    timeout: UPGRADE_TIMEOUT_MS,
  };
  await kc.applyToHTTPSOptions(opts);
  const request = (url.protocol === 'https:' ? https : http).request(url, opts);
  return new Promise<Duplex>((resolve, reject) => {
    request.on('upgrade', (res, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      if (res.headers['x-stream-protocol-version'] !== 'portforward.k8s.io') {
        socket.destroy();
        reject(
          new Error(
            `the API server did not agree to portforward.k8s.io (got ${res.headers['x-stream-protocol-version'] ?? 'none'})`,
          ),
        );
        return;
      }
      socket.setNoDelay(true);
      resolve(socket);
    });
    request.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => {
        let message = body.trim();
        try {
          message = (JSON.parse(body) as { message?: string }).message ?? message;
        } catch {
          // Not a Status.
        }
        reject(
          new Error(`port-forward to pod ${namespace}/${pod} refused (HTTP ${res.statusCode}): ${message}`),
        );
      });
    });
    request.on('timeout', () =>
      request.destroy(
        new Error(
          `the API server did not answer the port-forward request within ${UPGRADE_TIMEOUT_MS / 1000}s`,
        ),
      ),
    );
    request.on('error', reject);
    request.end();
  });
}

/**
 * One SPDY connection of a port-forward to a pod: every stream() is one forwarded connection to `port`
 * (an "error" and a "data" stream sharing a requestid, as kubectl opens per local connection). The manager's
 * forward opens a session per gRPC connection and shares one among the root daemon's flow connections; the
 * workstation's direct flows to an agent (agent/direct.ts) share one per pod, so a new intercepted
 * connection costs two SYN_STREAMs, not a TLS handshake and an upgrade.
 *
 * A stream's reader that does not keep up (more than MAX_BUFFERED waiting) pauses the whole connection:
 * the SPDY peers do no flow control, so there is nothing finer. Sharers carry their own per-flow window
 * (tunnel/framed-call.ts) and read on.
 *
 * A connection on which the kubelet failed a stream (it could not connect to the pod's port, or reset the
 * stream), or did not accept a new one within STREAM_REPLY_TIMEOUT_MS, takes no new stream: see taint().
 */
export class PortForwardSession {
  private readonly encoder = new HeaderBlockEncoder();
  private readonly decoder = new HeaderBlockDecoder();
  private readonly reader = new FrameReader({ streamData: true });
  /** By the ids of both its SPDY streams. */
  private readonly streams = new Map<number, ForwardedStream>();
  /** retire() was called: close once the last stream is gone. */
  private retiring = false;
  /** Why the connection takes no new stream after a stream failed (taint()); undefined while it does. */
  private tainted: string | undefined;
  private nextStreamId = 1;
  private nextRequestId = 0;
  private stalled = new Set<ForwardedStream>();
  /** Why the connection ended; undefined while it is up. */
  ended: string | undefined;
  private readonly pinger: NodeJS.Timeout;
  private nextPingId = 1;
  /** When the ping not yet answered was sent; undefined: none is. */
  private pingSentAt: number | undefined;
  /** The peer has answered a ping: only then does its silence mean something. */
  private answersPings = false;
  /** The streams' bytes both ways: this window's (from windowStart) and the one before. */
  private windowStart = 0;
  private windowBytes = 0;
  private previousWindowBytes = 0;
  /** When its last stream ended (Date.now()); undefined while it has one. */
  idleSince: number | undefined = Date.now();

  private constructor(
    readonly conn: Duplex,
    readonly pod: string,
    readonly port: number,
    private readonly log: Logger,
    private readonly liveness: Liveness,
  ) {
    conn.on('data', (chunk: Buffer) => this.received(chunk));
    this.pinger = setInterval(() => this.ping(), liveness.pingIntervalMs);
    this.pinger.unref();
    conn.on('end', () => this.close('the port-forward connection ended'));
    conn.on('error', (err) => this.close(`port-forward connection failed: ${err.message}`));
    conn.on('close', () => this.close('the port-forward connection closed'));
  }

  /** Upgrades a new connection to the pod's port-forward. */
  static async open(
    kc: ApiAccess,
    namespace: string,
    pod: string,
    port: number,
    log: Logger,
    liveness: Liveness = { pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS },
  ): Promise<PortForwardSession> {
    return new PortForwardSession(await upgrade(kc, namespace, pod, port), pod, port, log, liveness);
  }

  /** Whether a new stream may go on this connection: it is up, not retired, not tainted. */
  get takesNewStreams(): boolean {
    return !this.ended && !this.retiring;
  }

  /** A new forwarded connection to the pod's port. */
  stream(): ForwardedStream {
    if (this.ended) throw new Error(this.ended);
    if (this.retiring) throw new Error(this.tainted ?? 'the port-forward takes no new connections');
    const errorId = this.nextStreamId;
    const dataId = errorId + 2;
    this.nextStreamId += 4;
    const requestid = String(this.nextRequestId++);
    const headers = (streamtype: string) => ({ streamtype, port: String(this.port), requestid });
    this.conn.write(encodeSynStream(errorId, 0, this.encoder.encode(headers('error'))));
    this.conn.write(encodeSynStream(dataId, 0, this.encoder.encode(headers('data'))));
    const s = new ForwardedStream(this, dataId, errorId);
    this.streams.set(dataId, s);
    this.streams.set(errorId, s);
    const replyTimeoutMs = this.liveness.streamReplyTimeoutMs ?? STREAM_REPLY_TIMEOUT_MS;
    setTimeout(() => this.checkAccepted(s, replyTimeoutMs), replyTimeoutMs).unref();
    this.idleSince = undefined;
    return s;
  }

  /** Counts bytes its streams carried. */
  carried(bytes: number): void {
    const now = Date.now();
    const age = now - this.windowStart;
    if (age >= BUSY_WINDOW_MS) {
      this.previousWindowBytes = age < 2 * BUSY_WINDOW_MS ? this.windowBytes : 0;
      this.windowStart = now;
      this.windowBytes = 0;
    }
    this.windowBytes += bytes;
  }

  /** Its streams carried bytes at a bulk rate within the last BUSY_WINDOW_MS or so. */
  get busy(): boolean {
    return this.recentBytes >= BUSY_BYTES;
  }

  /** Bytes of the current window and the one before it, if they are recent. */
  get recentBytes(): number {
    const age = Date.now() - this.windowStart;
    if (age >= 2 * BUSY_WINDOW_MS) return 0;
    if (age >= BUSY_WINDOW_MS) return this.windowBytes;
    return Math.max(this.windowBytes, this.previousWindowBytes);
  }

  /** Ends the connection and every stream on it. */
  close(reason = 'the port-forward was closed'): void {
    if (this.ended) return;
    this.ended = reason;
    clearInterval(this.pinger);
    this.log.debug('port-forward session ended', { pod: this.pod, port: this.port, reason });
    this.decoder.close();
    for (const s of new Set(this.streams.values())) s.destroy(new Error(reason));
    this.streams.clear();
    this.conn.destroy();
  }

  /**
   * While streams are open: a PING each interval, and the connection given up when a peer that answers
   * pings stops answering (the workstation's network dropped: the streams' own sides would wait for the
   * kernel's TCP timeout). The manager's forward has gRPC keepalive inside; a pod's flows have only this.
   */
  private ping(): void {
    if (this.ended) return;
    const { pingTimeoutMs } = this.liveness;
    if (this.pingSentAt !== undefined) {
      if (this.answersPings && Date.now() - this.pingSentAt > pingTimeoutMs)
        this.close(`the port-forward answered no ping for ${pingTimeoutMs / 1000} s`);
      return;
    }
    if (this.streams.size === 0) return;
    this.pingSentAt = Date.now();
    this.conn.write(encodePing(this.nextPingId));
    this.nextPingId = this.nextPingId >= 0x7ffffff0 ? 1 : this.nextPingId + 2;
  }

  /** A stream still open and not accepted by the kubelet after `timeoutMs` taints the connection (and fails). */
  private checkAccepted(s: ForwardedStream, timeoutMs: number): void {
    if (!s.accepted && this.streams.get(s.dataId) === s)
      this.taint(`the kubelet did not accept a new stream within ${timeoutMs / 1000} s`);
  }

  /**
   * The kubelet failed a stream, or did not accept one in time: this connection takes no new stream, and its
   * streams that never heard from the pod are given up (their flows try again on a new connection: the pool
   * and SharedSession open one); those that did go on, and the connection closes after the last.
   *
   * containerd's port-forward up to 1.7 (Debian 12's 1.6.20 is the lab's; containerd#8849) stops serving a
   * connection's new streams after one failed: it closes a failed stream without resetting it, and a frame
   * of ours for that stream (its prelude) then holds one of spdystream's frame workers, which serve streams
   * by id. On the lab, the streams after it got no SYN_REPLY, or one and then neither the pod nor an error.
   * kubectl port-forward closes its connection after such an error (kubernetes#128319). A new manager pod
   * is dialed before it listens (podToForwardTo takes one whose containers started): without this, every
   * VIF flow after the first failed stream waited 7 s for an answer that never came, until the connection
   * ended.
   */
  taint(reason: string): void {
    if (this.ended) return;
    if (!this.tainted) {
      this.tainted = reason;
      this.log.debug('port-forward session takes no new connections', {
        pod: this.pod,
        port: this.port,
        reason,
      });
    }
    for (const s of new Set(this.streams.values()))
      if (!s.heardFromPod) s.destroy(new Error(`port-forward to ${this.label}: ${reason}`));
    this.retire();
  }

  /** A stream is done: its ids are forgotten (and reset when it did not finish both ways). */
  forget(s: ForwardedStream, reset: boolean): void {
    this.streams.delete(s.dataId);
    this.streams.delete(s.errorId);
    this.unstall(s);
    if (this.streams.size === 0) this.idleSince = Date.now();
    if (reset && !this.ended) {
      this.conn.write(encodeRstStream(s.dataId, RstStatus.Cancel));
      this.conn.write(encodeRstStream(s.errorId, RstStatus.Cancel));
    }
    if (this.retiring && this.streams.size === 0) this.close('no longer used');
  }

  /**
   * Takes no new stream's place any more: closes once its streams have ended (at once if none is open),
   * so connections in progress finish (a manager pod draining while its successor takes the new ones).
   */
  retire(): void {
    this.retiring = true;
    if (this.streams.size === 0) this.close('no longer used');
  }

  /** Its reader holds more than MAX_BUFFERED: the connection stops until it has read. */
  stall(s: ForwardedStream): void {
    this.stalled.add(s);
    this.conn.pause();
  }

  unstall(s: ForwardedStream): void {
    if (this.stalled.delete(s) && this.stalled.size === 0) this.conn.resume();
  }

  private received(chunk: Buffer): void {
    this.reader.push(chunk);
    let data = 0;
    for (let frame = this.reader.next(); frame && !this.ended; frame = this.reader.next()) {
      if (!frame.control) {
        data += frame.data.length;
        this.streams
          .get(frame.streamId)
          ?.received(frame.streamId, frame.data, (frame.flags & FLAG_FIN) !== 0);
        continue;
      }
      switch (frame.type) {
        case FrameType.SynReply:
          this.streams.get(frame.body.readUInt32BE(0) & 0x7fffffff)?.replied();
          // Keep the shared decompression context in step; the reply's headers carry nothing we need.
          this.decoder
            .decode(parseStreamHeaders(frame.body).headerBlock)
            .catch((err: Error) => this.close(err.message));
          break;
        case FrameType.RstStream: {
          const rst = parseRstStream(frame.body);
          const reset = this.streams.get(rst.streamId);
          if (reset) {
            const reason = `the kubelet reset a stream (status ${rst.status})`;
            reset.destroy(new Error(`port-forward to ${this.label}: ${reason}`));
            this.taint(reason);
          }
          break;
        }
        case FrameType.Ping:
          // Odd ids are ours (the client's): the peer's answer. The peer's own pings are answered.
          if (parsePing(frame.body) % 2 === 1) {
            this.pingSentAt = undefined;
            this.answersPings = true;
          } else this.conn.write(encodeControlFrame(FrameType.Ping, 0, frame.body));
          break;
        case FrameType.GoAway:
          parseGoAway(frame.body);
          this.close('the API server ended the port-forward session');
          break;
        case FrameType.SynStream:
          // The server never opens streams in port-forward; refuse politely.
          this.conn.write(encodeRstStream(frame.body.readUInt32BE(0) & 0x7fffffff, RstStatus.RefusedStream));
          break;
        default:
          // SETTINGS, WINDOW_UPDATE, HEADERS, NOOP: nothing to do.
          break;
      }
    }
    if (data > 0) this.carried(data);
  }

  get label(): string {
    return `${this.pod}:${this.port}`;
  }
}

/**
 * One forwarded connection of a PortForwardSession: a Duplex of the pod's bytes. The pod's error message
 * (the kubelet could not connect) destroys it with that message; end() sends FIN.
 */
export class ForwardedStream extends Duplex {
  private errorText = '';
  /** The pod's side ended (FIN): the stream can carry nothing new. Also announced as 'remote-end'. */
  remoteEnded = false;
  private localEnded = false;
  /** How many of its two SPDY streams the kubelet accepted (SYN_REPLY). */
  private replies = 0;
  /** Bytes came from the pod: the kubelet connected it. */
  heardFromPod = false;

  constructor(
    private readonly session: PortForwardSession,
    readonly dataId: number,
    readonly errorId: number,
  ) {
    super({ readableHighWaterMark: MAX_BUFFERED });
  }

  /** The kubelet accepted one of its two SPDY streams. */
  replied(): void {
    this.replies++;
  }

  /** The kubelet accepted both of its SPDY streams. */
  get accepted(): boolean {
    return this.replies >= 2;
  }

  /** Its session takes new streams (PodStreams hands out no ready connection on one that does not). */
  get onUsableSession(): boolean {
    return this.session.takesNewStreams;
  }

  received(streamId: number, data: Buffer, fin: boolean): void {
    if (streamId === this.errorId) {
      this.errorText += data.toString('utf8');
      if (fin && this.errorText !== '') {
        const message = this.errorText.trim();
        this.destroy(new Error(`port-forward to ${this.session.label} failed: ${message}`));
        this.session.taint(`a stream failed: ${message}`);
      }
      return;
    }
    if (data.length > 0) this.heardFromPod = true;
    if (data.length > 0 && !this.push(data)) this.session.stall(this);
    if (fin && !this.remoteEnded) {
      this.remoteEnded = true;
      // At once, even while nothing reads (a spare, an idle stream): 'end' waits for a reader.
      this.emit('remote-end');
      this.push(null);
      if (this.localEnded) this.session.forget(this, false);
    }
  }

  override _read(): void {
    this.session.unstall(this);
  }

  /** Its session carries a transfer in bulk now: a new flow would wait behind it. */
  get onBusySession(): boolean {
    return this.session.busy;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.send([chunk], done);
  }

  /** What was written while the connection was busy, in one go. */
  override _writev(
    chunks: { chunk: Buffer; encoding: BufferEncoding }[],
    done: (error?: Error | null) => void,
  ): void {
    this.send(
      chunks.map((c) => c.chunk),
      done,
    );
  }

  /**
   * `done` runs once the connection has written the last byte (the TLS socket encrypted it): only then may
   * a writer reuse the memory (a flow's read buffers, tunnel/framed-call.ts writesAreFinal).
   */
  private send(chunks: Buffer[], done: (error?: Error | null) => void): void {
    const conn = this.session.conn;
    const parts: Buffer[] = [];
    for (const chunk of chunks)
      for (let offset = 0; offset < chunk.length; offset += MAX_DATA_FRAME)
        parts.push(chunk.subarray(offset, offset + MAX_DATA_FRAME));
    if (parts.length === 0) {
      done();
      return;
    }
    let bytes = 0;
    for (const part of parts) bytes += part.length;
    this.session.carried(bytes);
    // Each frame's header and payload leave in one write, not as a small record of their own.
    conn.cork();
    parts.forEach((part, i) => {
      conn.write(encodeDataFrameHeader(this.dataId, 0, part.length));
      if (i < parts.length - 1) conn.write(part);
      else conn.write(part, (e) => done(e));
    });
    conn.uncork();
  }

  override _final(done: (error?: Error | null) => void): void {
    this.localEnded = true;
    if (!this.session.ended) {
      this.session.conn.write(encodeDataFrameHeader(this.dataId, FLAG_FIN, 0));
      // The error stream is ours to close too: the kubelet waits for both halves.
      this.session.conn.write(encodeDataFrameHeader(this.errorId, FLAG_FIN, 0));
    }
    if (this.remoteEnded) this.session.forget(this, false);
    done();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    this.session.forget(this, !(this.localEnded && this.remoteEnded));
    done(error);
  }
}

/**
 * Forwards one local socket to a pod's port over a fresh SPDY connection. Resolves once the data
 * stream is open; the socket is closed with the pod's error message if the kubelet cannot connect.
 */
export async function forwardSocket(
  kc: ApiAccess,
  namespace: string,
  pod: string,
  port: number,
  local: net.Socket,
  log: Logger,
): Promise<void> {
  const session = await PortForwardSession.open(kc, namespace, pod, port, log);
  pipeForwarded(session.stream(), local, log, pod, port, () => session.close());
}

/**
 * Relays a local connection and its forwarded stream both ways; `done` once both are over. `windowed`: the
 * bytes carry a flow of their own with its window (tunnel/framed-call.ts), which bounds what waits for the
 * local side; the stream is then never paused, since pausing it would stop the whole shared port-forward
 * (PortForwardSession.stall) and every other flow on it behind one slow reader.
 */
function pipeForwarded(
  remote: ForwardedStream,
  local: net.Socket,
  log: Logger,
  pod: string,
  port: number,
  done: () => void,
  windowed = false,
): void {
  let closed = false;
  const close = (why?: string) => {
    if (closed) return;
    closed = true;
    if (why) {
      log.debug('port-forward connection closed', { pod, port, reason: why });
      local.destroy(new Error(why));
    } else local.end();
    done();
  };
  remote.on('data', (chunk: Buffer) => (windowed ? local.write(chunk) : relayWrite(remote, local, chunk)));
  remote.on('end', () => local.end());
  remote.on('error', (err) => close(err.message));
  // After both directions finished (or an error, reported above).
  remote.on('close', () =>
    close(remote.readableEnded && remote.writableFinished ? undefined : 'the port-forward connection closed'),
  );
  local.on('data', (chunk: Buffer) => relayWrite(local, remote, chunk));
  local.on('end', () => remote.end());
  local.on('error', () => close('local connection failed'));
  local.on('close', () => {
    if (!closed) {
      closed = true;
      remote.destroy();
      done();
    }
  });
}

/**
 * The pod a port-forward to a Service's pods goes to: a Ready one; when none is (a deleted or crashed
 * manager's successor starting), one that runs with every container started, not yet through its
 * readiness probe. The manager's probe is a TCP connect to the same port (charts/tp), done once per
 * periodSeconds, so the workstation trying the port itself reaches a new manager up to a period sooner,
 * and a port nothing listens on yet only fails that one try. Never a pod that is being deleted.
 */
export function podToForwardTo(pods: V1Pod[]): V1Pod | undefined {
  const running = pods.filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === 'Running');
  return (
    running.find((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) ??
    running.find((p) => {
      const statuses = p.status?.containerStatuses ?? [];
      return statuses.length > 0 && statuses.every((c) => c.started === true);
    })
  );
}

/** The pod behind a Service that podToForwardTo chooses, and the container port its targetPort names. */
export async function readyPodBehindService(
  kc: ApiAccess,
  namespace: string,
  service: string,
  servicePortName?: string,
): Promise<{ pod: string; port: number }> {
  const ns = `/api/v1/namespaces/${encodeURIComponent(namespace)}`;
  let svc: V1Service;
  try {
    svc = await apiGet<V1Service>(kc, `${ns}/services/${encodeURIComponent(service)}`);
  } catch (err) {
    if (err instanceof ApiStatusError && err.code === 404)
      throw new UsageError(
        `no traffic manager in namespace ${namespace} (Service ${service} not found): install it with tp helm install (or pass --manager-namespace NS if it runs elsewhere)`,
      );
    throw new UsageError(`cannot read Service ${namespace}/${service}: ${(err as Error).message}`);
  }
  const selector = Object.entries(svc.spec?.selector ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const sp =
    svc.spec?.ports?.find((p) => !servicePortName || p.name === servicePortName) ?? svc.spec?.ports?.[0];
  if (!sp) throw new UsageError(`Service ${namespace}/${service} has no ports`);
  const pods = await apiGet<V1PodList>(kc, `${ns}/pods?labelSelector=${encodeURIComponent(selector)}`);
  const pod = podToForwardTo(pods.items);
  if (!pod) {
    const states = pods.items.map((p) => `${p.metadata?.name} ${p.status?.phase}`).join(', ') || 'none';
    throw new UsageError(
      `the traffic manager in namespace ${namespace} has no ready pod (pods: ${states}): see kubectl get pods -n ${namespace}`,
    );
  }
  const target = sp.targetPort ?? sp.port;
  let port = Number(target);
  if (!Number.isInteger(port)) {
    const named = pod.spec?.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === target);
    if (!named) throw new UsageError(`the manager pod declares no port named ${target}`);
    port = named.containerPort;
  }
  return { pod: pod.metadata!.name!, port };
}

export interface ManagerForward {
  /** 127.0.0.1:PORT: dial this to reach the traffic manager. */
  address: string;
  close(): Promise<void>;
}

/**
 * A local listener whose every connection is forwarded to the traffic manager's port through the API
 * server. The manager pod is looked up again for each connection, so a restarted manager is reached as soon
 * as its new pod is ready. A gRPC connection gets a port-forward of its own; flow connections (the root
 * daemon's TCP flows, which start with FLOW_MAGIC) are streams of one shared port-forward, as `kubectl
 * port-forward` opens one stream per connection: a new one costs the kubelet's stream set-up, not an
 * upgrade through the API server.
 */
export async function forwardToManager(
  kc: ApiAccess,
  log: Logger,
  namespace = DEFAULT_MANAGER_NAMESPACE,
): Promise<ManagerForward> {
  // Fail now, with a message, when there is no manager to reach.
  const target = managerTarget(() => kc, namespace);
  const first = await target.resolve();
  const forward = await forwardingListener(kc, log, namespace, 'the traffic manager', {
    target: () => target.resolve(),
    failed: () => target.failed(),
    shareFlowConnections: true,
  });
  log.info('forwarding to the traffic manager through the API server', {
    namespace,
    pod: first.pod,
    address: forward.address,
  });
  return forward;
}

/** Where a port-forward goes: a pod and its port. */
export interface ForwardTarget {
  pod: string;
  port: number;
}

/** Finds the pod a port-forward goes to now; failed(): the last one did not work, look again next time. */
export interface TargetResolver {
  resolve(): Promise<ForwardTarget>;
  failed(): void;
}

/** How long the manager's pod, once looked up, is taken as the target without looking again. */
const MANAGER_TARGET_TTL_MS = 2_000;

/**
 * The traffic manager's ready pod behind its Service, looked up again after MANAGER_TARGET_TTL_MS or a
 * failure, so a restarted manager is reached as soon as its new pod is ready. `kc`: the credentials at the
 * time of each lookup (the root daemon's are renewed).
 */
export function managerTarget(kc: () => ApiAccess, namespace: string): TargetResolver {
  let known: ForwardTarget | undefined;
  let at = 0;
  return {
    resolve: async () => {
      if (!known || Date.now() - at > MANAGER_TARGET_TTL_MS) {
        known = await readyPodBehindService(kc(), namespace, MANAGER_SERVICE, 'grpc');
        at = Date.now();
      }
      return known;
    },
    failed: () => {
      at = 0;
    },
  };
}

/** A local listener whose every connection is forwarded to `port` of one pod through the API server. */
export function forwardToPod(
  kc: ApiAccess,
  log: Logger,
  namespace: string,
  pod: string,
  port: number,
): Promise<ManagerForward> {
  return forwardingListener(kc, log, namespace, `pod ${namespace}/${pod} port ${port}`, {
    target: async () => ({ pod, port }),
    failed: () => {},
  });
}

/**
 * Listens on 127.0.0.1 (a free port) and forwards each connection to where `how.target()` says. `kc`: the
 * access, or a function giving the access of the moment (the root daemon's is renewed).
 */
export async function forwardingListener(
  kc: ApiAccess | (() => ApiAccess),
  log: Logger,
  namespace: string,
  what: string,
  how: {
    target: () => Promise<{ pod: string; port: number }>;
    failed: () => void;
    /** Connections that start with FLOW_MAGIC share one port-forward (per target). */
    shareFlowConnections?: boolean;
  },
): Promise<ManagerForward> {
  const access = typeof kc === 'function' ? kc : () => kc;
  const sockets = new Set<net.Socket>();
  const shared = new SharedSession(
    (t) => PortForwardSession.open(access(), namespace, t.pod, t.port, log),
    log,
  );
  const server = net.createServer({ noDelay: true }, (local) => {
    sockets.add(local);
    local.on('close', () => sockets.delete(local));
    local.pause();
    void (async () => {
      try {
        const target = await how.target();
        const started = Date.now();
        const first = how.shareFlowConnections ? await firstBytes(local) : undefined;
        if (first && first.length > 0 && agreesWithFlowMagic(first)) {
          const session = await shared.get(target);
          pipeForwarded(session.stream(), local, log, target.pod, target.port, () => {}, true);
        } else await forwardSocket(access(), namespace, target.pod, target.port, local, log);
        log.debug(`forwarding a connection to ${what}`, {
          pod: target.pod,
          openedInMs: Date.now() - started,
        });
        local.resume();
      } catch (err) {
        how.failed();
        log.debug(`cannot forward to ${what}`, { error: (err as Error).message });
        local.destroy();
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        shared.close();
        server.close(() => resolve());
      }),
  };
}

/**
 * The PortForwardSessions to a target that its connections share (the manager's flow connections,
 * PodStreams). A new connection goes on the oldest session not busy with a transfer in bulk; when every one
 * is (or none is open), on a new session, up to MAX_SHARED_SESSIONS, beyond which it takes the least busy.
 * So a download does not hold up the requests that start beside it (they would wait behind what it has in
 * flight), and the connections that start meanwhile share the new session. One beyond the first is closed
 * after EXTRA_SESSION_IDLE_MS without a stream.
 *
 * A session that ended or failed is opened again on the next use, and all are retired when the target names
 * another pod: each closes once its connections have ended (a draining manager finishes them). Callers that
 * come while a session is being opened wait for that one, and fail with it (unless another is open: they take
 * that, busy or not).
 */
class SharedSession {
  private target: ForwardTarget | undefined;
  /** Open sessions to `target`, oldest first. */
  private sessions: PortForwardSession[] = [];
  private opening: Promise<PortForwardSession> | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  /** Sessions that take no new stream but may still carry some (retired, tainted): closed by close(). */
  private readonly retired = new Set<PortForwardSession>();

  constructor(
    private readonly open: (target: ForwardTarget) => Promise<PortForwardSession>,
    private readonly log: Logger,
  ) {}

  async get(target: ForwardTarget): Promise<PortForwardSession> {
    if (!this.target || !sameTarget(this.target, target)) {
      for (const s of this.sessions) s.retire();
      this.dropUnusable();
      this.opening = undefined;
      this.target = target;
    }
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new Error('the port-forward was closed');
      this.dropUnusable();
      const free = this.sessions.find((s) => !s.busy);
      if (free) return free;
      if (this.sessions.length >= MAX_SHARED_SESSIONS) return leastBusy(this.sessions);
      const opening = this.opening ?? this.start(target);
      try {
        const session = await opening;
        // Closed at once (the API server or the pod went away), tainted, or closed by close(): open again,
        // once.
        if (session.takesNewStreams || attempt > 0) return session;
      } catch (err) {
        const open = this.sessions.filter((s) => s.takesNewStreams);
        if (open.length > 0) return leastBusy(open);
        throw err;
      }
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const s of [...this.sessions, ...this.retired]) s.close();
    this.sessions = [];
    this.retired.clear();
    void this.opening?.then(
      (s) => s.close(),
      () => {},
    );
  }

  private start(target: ForwardTarget): Promise<PortForwardSession> {
    if (this.sessions.length > 0)
      this.log.debug('another port-forward session: the open ones carry transfers in bulk', {
        pod: target.pod,
        open: this.sessions.length,
      });
    const opening = this.open(target);
    this.opening = opening;
    opening.then(
      (s) => {
        if (this.opening === opening) this.opening = undefined;
        if (this.closed) s.close();
        else if (this.target && sameTarget(this.target, target)) {
          this.sessions.push(s);
          this.sweep();
        }
        // Opened for a pod no longer the target: its callers take their connections first.
        else {
          this.retired.add(s);
          setImmediate(() => s.retire());
        }
      },
      () => {
        if (this.opening === opening) this.opening = undefined;
      },
    );
    return opening;
  }

  /** Keeps in `sessions` those that take new streams; the others are kept in `retired` until they have ended. */
  private dropUnusable(): void {
    for (const s of this.retired) if (s.ended) this.retired.delete(s);
    for (const s of this.sessions) if (!s.takesNewStreams && !s.ended) this.retired.add(s);
    this.sessions = this.sessions.filter((s) => s.takesNewStreams);
  }

  /** Closes the sessions beyond the first that have had no stream for EXTRA_SESSION_IDLE_MS; checks again while there are any. */
  private sweep(): void {
    const now = Date.now();
    this.dropUnusable();
    const [first, ...extra] = this.sessions;
    const idle = extra.filter((s) => s.idleSince !== undefined && now - s.idleSince >= EXTRA_SESSION_IDLE_MS);
    for (const s of idle) s.close('no longer used');
    this.sessions = first ? [first, ...extra.filter((s) => !idle.includes(s))] : [];
    if (this.sessions.length > 1 && !this.sweeper && !this.closed) {
      this.sweeper = setInterval(() => this.sweep(), EXTRA_SESSION_IDLE_MS / 2);
      this.sweeper.unref();
    } else if (this.sessions.length <= 1 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

function sameTarget(a: ForwardTarget, b: ForwardTarget): boolean {
  return a.pod === b.pod && a.port === b.port;
}

/** The session whose streams carried the fewest bytes lately. */
function leastBusy(sessions: PortForwardSession[]): PortForwardSession {
  return sessions.reduce((a, b) => (b.recentBytes < a.recentBytes ? b : a));
}

/**
 * Forwarded connections to one pod's port on a shared PortForwardSession, opened on first use and again
 * after it ended (the API server restarted, the network dropped). The target is one pod, or a
 * TargetResolver's (the traffic manager's current pod): when it names another pod, the next connection
 * opens a session to that one, and the previous session closes once its connections have ended (a
 * draining manager finishes them).
 *
 * With `prelude`, every connection starts with those bytes, and at least one is kept ready ahead of need:
 * the connections handed back after a flow (release()), else a spare opened for the purpose. A new
 * connection then costs nothing on the kubelet's side, which otherwise sets up a stream and dials the pod
 * for each (measured on the lab: ~1 ms of a new intercepted connection's round trip). A ready connection
 * is dropped after SPARE_MAX_AGE_MS unused (well within what the far side waits for its first message) or
 * when its pod side ends (the agent restarted), and the spare opened again if none is left.
 */
export class PodStreams {
  private readonly sessions: SharedSession;
  private closed = false;
  private readonly target: TargetResolver;
  /** The last target (logs and the flows' labels). */
  private last: ForwardTarget | undefined;
  /** The connections, for a flow dialer that takes them itself (daemons/root/tunnel-dialer.ts). */
  readonly pool: FlowConnectionPool<ForwardedStream>;

  /** `kc`: the credentials new sessions open with (the root daemon's are renewed: replace it). */
  constructor(
    public kc: ApiAccess,
    private readonly log: Logger,
    readonly namespace: string,
    target: ForwardTarget | TargetResolver,
    private readonly prelude?: Buffer,
    /** The windows of the flows on these connections (tunnel/framed-call.ts FlowWindowGroup). */
    windows?: FlowWindowGroup,
  ) {
    this.sessions = new SharedSession(
      (t) => PortForwardSession.open(this.kc, this.namespace, t.pod, t.port, log),
      log,
    );
    this.target = 'resolve' in target ? target : { resolve: async () => target, failed: () => {} };
    if (!('resolve' in target)) this.last = target;
    const what =
      'resolve' in target
        ? `the port-forward in namespace ${namespace}`
        : `pod ${namespace}/${target.pod}:${target.port}`;
    this.pool = new FlowConnectionPool({
      connect: () => this.fresh(),
      what,
      log,
      spare: prelude !== undefined,
      maxIdleMs: SPARE_MAX_AGE_MS,
      suits: (s) => s.onUsableSession && !s.onBusySession,
      windows,
    });
  }

  /**
   * A connection, its prelude written: the newest ready one, else a new one; rejects when no port-forward
   * to the pod can be opened.
   */
  async open(): Promise<ForwardedStream> {
    return (await this.pool.open()).connection;
  }

  /** A connection whose flow ended cleanly, ready for the next open(). */
  release(stream: ForwardedStream): void {
    this.pool.release(stream);
  }

  /**
   * A flow's stream on a connection from open(): release()d after a clean end, for the pod's next flow.
   * `peerTakesWindows`: the far side takes WINDOW frames (tunnel/framed-call.ts).
   */
  flowStream(bytes: ForwardedStream, peerTakesWindows = false): TunnelStream {
    return this.pool.flowStream(bytes, this.label, peerTakesWindows);
  }

  /** POD:PORT of the last target. */
  get label(): string {
    return this.last ? `${this.last.pod}:${this.last.port}` : this.namespace;
  }

  /** Opens the session (and the spare) ahead of the first connection. */
  warm(): void {
    if (this.prelude) this.pool.warm();
    else
      this.target
        .resolve()
        .then((t) => this.session(t))
        .catch((e: Error) =>
          this.log.debug('no port-forward for flows yet', { to: this.label, reason: e.message }),
        );
  }

  close(): void {
    this.closed = true;
    this.pool.close();
    this.sessions.close();
  }

  private async fresh(): Promise<ForwardedStream> {
    if (this.closed) throw new Error('the port-forward was closed');
    const session = await this.session(await this.target.resolve());
    if (this.closed) throw new Error('the port-forward was closed');
    const s = session.stream();
    // Until its taker listens (the pool, a flow): the session failing meanwhile must not go unheard.
    s.on('error', () => {});
    if (this.prelude) s.write(this.prelude);
    return s;
  }

  /** The shared session to `target`; a failure to open it says so to the resolver (look again). */
  private session(target: ForwardTarget): Promise<PortForwardSession> {
    this.last = target;
    return this.sessions.get(target).catch((e: unknown) => {
      this.target.failed();
      throw e;
    });
  }
}

/** A paused connection's first bytes, put back (empty if it ended first). */
function firstBytes(local: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const done = (chunk: Buffer) => {
      local.off('data', onData);
      local.off('end', onEnd);
      local.pause();
      if (chunk.length > 0) local.unshift(chunk);
      resolve(chunk);
    };
    const onData = (chunk: Buffer) => done(chunk);
    const onEnd = () => done(Buffer.alloc(0));
    local.on('data', onData);
    local.once('end', onEnd);
    local.resume();
  });
}
