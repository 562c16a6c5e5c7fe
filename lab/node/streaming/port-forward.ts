// portforward.k8s.io over SPDY: for every forwarded connection the client opens two streams, "error"
// and "data", carrying the same requestid and port headers. When both are there we dial the pod and
// copy bytes. The error stream is always FIN'ed when the connection ends: the client reads it to EOF
// before closing its local socket. Anything written to it is an error message, and kubectl (1.23+)
// then tears down the whole port-forward session, so it is written only on a real failure.
import type * as net from 'node:net';
import type { Logger } from '../../../logging/logger.js';
import type { HeaderMap } from '../../../spdy/frames.js';
import type { SpdySession, SpdyStream } from './spdy-session.js';

/** How long the first stream of a pair waits for its partner (the kubelet's stream creation timeout). */
export const STREAM_PAIR_TIMEOUT_MS = 30_000;

interface PairableStream {
  id: number;
  headers: HeaderMap;
}

export interface StreamPair<S extends PairableStream> {
  requestId: string;
  port: number;
  data: S;
  error: S;
}

export type PairingOutcome<S extends PairableStream> =
  | { kind: 'rejected'; reason: string }
  | { kind: 'waiting'; requestId: string; isNew: boolean }
  | { kind: 'duplicate'; requestId: string; message: string; error: S | undefined }
  | { kind: 'paired'; pair: StreamPair<S> };

/** Matches "error" and "data" streams into pairs; pure bookkeeping, no I/O. */
export class StreamPairer<S extends PairableStream> {
  private readonly pending = new Map<string, { data?: S; error?: S }>();

  accept(stream: S): PairingOutcome<S> {
    const portHeader = stream.headers.port;
    const port = Number(portHeader);
    if (portHeader === undefined || !/^\d+$/.test(portHeader) || port < 1 || port > 65535) {
      return { kind: 'rejected', reason: `invalid port header ${JSON.stringify(portHeader ?? '')}` };
    }
    const type = stream.headers.streamtype;
    if (type !== 'error' && type !== 'data') {
      return { kind: 'rejected', reason: `invalid stream type ${JSON.stringify(type ?? '')}` };
    }
    // Clients older than requestid pair by stream id: error first, data two ids later.
    const requestId = stream.headers.requestid ?? String(type === 'error' ? stream.id : stream.id - 2);
    let entry = this.pending.get(requestId);
    const isNew = entry === undefined;
    if (!entry) {
      entry = {};
      this.pending.set(requestId, entry);
    }
    if (entry[type]) {
      return {
        kind: 'duplicate',
        requestId,
        message: `error processing stream for request ${requestId}: ${type} stream already assigned`,
        error: entry.error,
      };
    }
    entry[type] = stream;
    if (entry.data && entry.error) {
      this.pending.delete(requestId);
      return {
        kind: 'paired',
        pair: { requestId, port: Number(entry.data.headers.port), data: entry.data, error: entry.error },
      };
    }
    return { kind: 'waiting', requestId, isNew };
  }

  /** Gives up on an incomplete pair; returns its streams so they can be closed. */
  expire(requestId: string): { data?: S; error?: S } | undefined {
    const entry = this.pending.get(requestId);
    this.pending.delete(requestId);
    return entry;
  }

  get pendingCount(): number {
    return this.pending.size;
  }
}

export interface PortForwardTarget {
  /** For error messages: namespace/name and uid, as the kubelet words them. */
  podName: string;
  podUid: string;
  /** Opens a connection to the pod's port. */
  dial(port: number): net.Socket;
}

export function servePortForward(session: SpdySession, target: PortForwardTarget, log: Logger): void {
  const pairer = new StreamPairer<SpdyStream>();
  const timers = new Map<string, NodeJS.Timeout>();
  session.on('close', () => {
    for (const t of timers.values()) clearTimeout(t);
    timers.clear();
  });

  session.on('stream', (stream) => {
    stream.on('error', (err) => log.debug('port-forward stream error', { stream: stream.id, error: err }));
    const outcome = pairer.accept(stream);
    switch (outcome.kind) {
      case 'rejected':
        log.info('port-forward stream rejected', { reason: outcome.reason });
        stream.reset();
        return;
      case 'duplicate':
        outcome.error?.write(outcome.message);
        stream.reset();
        return;
      case 'waiting':
        if (outcome.isNew) {
          const timer = setTimeout(() => {
            timers.delete(outcome.requestId);
            const streams = pairer.expire(outcome.requestId);
            const message = `timed out waiting for streams (request ${outcome.requestId})`;
            log.info(`port-forward ${message}`);
            streams?.error?.end(message);
            streams?.data?.end();
          }, STREAM_PAIR_TIMEOUT_MS);
          timers.set(outcome.requestId, timer);
        }
        return;
      case 'paired': {
        const timer = timers.get(outcome.pair.requestId);
        if (timer) clearTimeout(timer);
        timers.delete(outcome.pair.requestId);
        forward(outcome.pair, target, log);
        return;
      }
    }
  });
}

function forward(pair: StreamPair<SpdyStream>, target: PortForwardTarget, log: Logger): void {
  const { data, error, port } = pair;
  log.debug('port-forward connection', { request: pair.requestId, port });
  const socket = target.dial(port);
  let finished = false;
  const finish = (message?: string) => {
    if (finished) return;
    finished = true;
    if (message) error.end(message);
    else error.end();
  };
  socket.setNoDelay(true);
  socket.on('connect', () => {
    data.pipe(socket); // client FIN -> half-close towards the pod
    socket.pipe(data); // pod EOF -> FIN to the client
  });
  socket.on('error', (err) => {
    const message = `error forwarding port ${port} to pod ${target.podName}, uid ${target.podUid}: ${err.message}`;
    log.info(message);
    finish(message);
    data.end();
  });
  socket.on('close', () => finish());
  data.on('close', () => socket.destroy());
  error.on('close', () => socket.destroy());
  error.resume(); // the client never writes to it
}
