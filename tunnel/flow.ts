// One TCP connection carried over one tunnel stream: the socket pump and the two ways a flow starts.
//
//   originate(socket, stream, info)  the side that accepted a connection: OPEN, wait for DIAL_OK, pump.
//   openFlow(stream, info)           the OPEN/DIAL_OK exchange alone, before there is a socket (the root
//                                    daemon's VIF holds the client's SYN until the destination answered);
//   originate(socket, stream, info, { dialed: true })  then pumps that stream.
//   answer(stream, dial)             the side that dials: read OPEN, dial, DIAL_OK or DIAL_REJECT, pump.
//   serveDial(stream, info, dial)    the same once OPEN has been read (the manager routes on it first).
//
// The pump moves bytes both ways with backpressure (the socket pauses while the stream's send budget is
// spent; the stream pauses while the socket's write buffer is full), coalesces socket reads into large
// DATA messages (a socket it dials with `onread`, or one created with a read-switch.ts ReadSwitch, reads
// straight into them: rpc/tunnel-codec.ts DataReader), carries half-close (FIN <-> CLOSE_SEND) and reset
// (RST <-> RESET), resets idle flows and sends KEEPALIVE on quiet ones.
import * as net from 'node:net';
import { createLogger, type Logger } from '../logging/logger.js';
import {
  DataReader,
  dataWritten,
  encodedDataMessage,
  isJoined,
  receivedWritten,
} from '../rpc/tunnel-codec.js';
import { Coalescer } from './coalescer.js';
import { type Dialer, dialTcp, type OnRead } from './dial.js';
import {
  abort,
  dialed,
  type FlowAction,
  type FlowState,
  initialFlowState,
  receive,
  sendCloseSend,
} from './flow-state.js';
import {
  DEFAULT_KEEPALIVE_INTERVAL_MS,
  formatConnectionId,
  isWorkstationUnavailable,
  MAX_DATA_BYTES,
  msg,
  type StreamInfo,
  type TunnelMessage,
} from './messages.js';
import type { ReadSwitch } from './read-switch.js';
import type { TunnelStream } from './stream.js';

export type FlowOutcome =
  /** Both directions closed with FIN. */
  | { kind: 'closed'; bytesIn: number; bytesOut: number }
  /** Aborted: by this side (socket error, idle, protocol error) or by the peer (RESET, stream lost). */
  | { kind: 'reset'; by: 'local' | 'peer'; reason: string; bytesIn: number; bytesOut: number }
  /**
   * The dial failed or timed out: the accepted socket was reset. `refused`: the far side answered
   * DIAL_REJECT (its destination refused), rather than going away or not answering.
   */
  | { kind: 'rejected'; reason: string; refused?: boolean }
  /**
   * The far side went away before it sent a byte (OriginateOptions.replay): the socket and what it had
   * sent went to the replay's fallback instead of being reset.
   */
  | { kind: 'handed-over'; reason: string; bytesIn: number; bytesOut: 0 };

export interface FlowOptions {
  /** Sends KEEPALIVE after this long without sending anything. */
  keepaliveIntervalMs?: number;
  /** Largest DATA message. */
  maxDataBytes?: number;
  log?: Logger;
}

export interface OriginateOptions extends FlowOptions {
  /**
   * The stream's OPEN/DIAL_OK exchange is already done (openFlow): pump at once. Messages the far side
   * sent meanwhile (a server that speaks first) wait in the stream's queue and are delivered first.
   */
  dialed?: boolean;
  /**
   * Until the far side sends its first byte, keep what the socket sent (up to `limit` bytes). If the flow
   * is lost before that because the far side is unavailable — the stream fails or ends, or a RESET whose
   * reason is WORKSTATION_UNAVAILABLE (the manager's relay lost the workstation) — the socket is not
   * reset: `fallback` gets it, paused, with those bytes and whether the socket had ended, so that another
   * destination can take the connection over as if nothing happened (agent/listeners.ts: the app).
   */
  replay?: {
    limit: number;
    fallback: (socket: net.Socket, sent: Buffer[], ended: boolean, reason: string) => void;
  };
  /**
   * Early data (the far side speaks messages.ts EARLY_DATA_VERSION): the socket is read at once and what
   * it sends goes right behind OPEN, before DIAL_OK, and so does its FIN. With `replay`, reading stops at
   * the replay's limit until DIAL_OK, and a dial that fails for any reason but the far side's own refusal
   * (DIAL_REJECT without WORKSTATION_UNAVAILABLE) hands the socket over as well.
   */
  earlyData?: boolean;
  /** Wait at most this long for DIAL_OK (default and upper bound: info.dialTimeoutMs). */
  dialDeadlineMs?: number;
  /**
   * The far side opened the stream, answering a DialRequest of this side's (agent/direct.ts): its OPEN is
   * read, and this side sends none; the flow is the same from there on.
   */
  openedByFarSide?: boolean;
  /**
   * The socket was created with this as its `onread` (read-switch.ts): the flow reads it straight into
   * DATA messages, as a socket it dials, and gives its reads back to the socket's stream when it hands the
   * socket over (`replay`).
   */
  reads?: ReadSwitch;
}

const defaultLog = createLogger('tunnel');

/** The far side could not dial (DIAL_REJECT), reset the flow, went away, or did not answer in time. */
export class FlowDialRejected extends Error {
  override name = 'FlowDialRejected';
  constructor(
    message: string,
    /** The far side answered DIAL_REJECT (rather than resetting, going away or not answering). */
    readonly dialRejected = false,
    /**
     * The stream ended or failed before an answer: the far side went away or could not be reached (a
     * manager restarting, a broken port-forward), which says nothing about the destination.
     */
    readonly gone = false,
  ) {
    super(message);
  }
}

/**
 * The accepting side: sends OPEN, waits for DIAL_OK (at most info.dialTimeoutMs), then pumps. With
 * `dialed`, the stream has been through openFlow() and the pump starts at once.
 */
export function originate(
  socket: net.Socket,
  stream: TunnelStream,
  info: StreamInfo,
  options: OriginateOptions = {},
): Promise<FlowOutcome> {
  const flow = new Flow(stream, info, options);
  return options.dialed ? flow.pumpDialed(socket) : flow.originate(socket);
}

/**
 * Sends OPEN and waits for DIAL_OK, before any socket exists; rejects with FlowDialRejected (the stream
 * is then ended) on DIAL_REJECT, RESET, the end of the stream, or no answer within info.dialTimeoutMs
 * plus `graceMs` (the far side has its own dial timeout; this one covers a far side that is gone). On
 * success hand the stream to originate(socket, stream, info, { dialed: true }); until then the messages
 * that follow DIAL_OK wait in the stream's queue.
 */
export function openFlow(stream: TunnelStream, info: StreamInfo, graceMs = 2_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let state = initialFlowState('awaiting-dial');
    let settled = false;
    /** `abandon`: the far side never answered; the stream is aborted, not ended (nothing waits for its end). */
    const settle = (error?: string, dialRejected = false, gone = false, abandon = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.onMessage(undefined);
      stream.off('peer-end', onEnd);
      stream.off('failure', onFailure);
      if (error === undefined) return resolve();
      if (abandon) stream.abort(error);
      else stream.end();
      reject(new FlowDialRejected(error, dialRejected, gone));
    };
    const waitMs = info.dialTimeoutMs + graceMs;
    // A far side that answers nothing within its own dial timeout is not there (a port-forward stream the
    // kubelet never connected, a manager that hangs): the stream is aborted, and a flow connection with it
    // (framed-call.ts cancel), rather than ended and kept for a next flow that would wait as long.
    const timer = setTimeout(
      () => settle(`the far side did not answer within ${waitMs} ms`, false, false, true),
      waitMs,
    );
    const onEnd = () => settle('the far side ended the stream before answering', false, true);
    const onFailure = (reason?: string) => settle(`the tunnel failed: ${reason ?? 'unknown'}`, false, true);
    stream.once('peer-end', onEnd);
    stream.once('failure', onFailure);
    stream.onMessage((m) => {
      const t = receive(state, m);
      state = t.state;
      const a = t.action;
      if (a.kind === 'dial-ok') settle();
      else if (a.kind === 'dial-reject') settle(a.reason, true);
      else if (a.kind === 'reset') settle(a.reason || 'the far side reset the flow');
      else if (a.kind === 'protocol-error') {
        stream.send(msg.reset(a.reason));
        settle(`the far side broke the protocol: ${a.reason}`);
      }
    });
    stream.send(msg.open(info));
  });
}

/** The dialing side: reads OPEN (at most openTimeoutMs), then serveDial. */
export async function answer(
  stream: TunnelStream,
  dial: (info: StreamInfo) => Dialer,
  openTimeoutMs: number,
  options: FlowOptions = {},
): Promise<FlowOutcome> {
  let info: StreamInfo;
  try {
    info = await readOpen(stream, openTimeoutMs);
  } catch (e) {
    return { kind: 'rejected', reason: (e as Error).message };
  }
  return serveDial(stream, info, dial(info), options);
}

/** The dialing side after OPEN: dials (at most info.dialTimeoutMs), answers DIAL_OK or DIAL_REJECT, pumps. */
export function serveDial(
  stream: TunnelStream,
  info: StreamInfo,
  dial: Dialer,
  options: FlowOptions = {},
): Promise<FlowOutcome> {
  return new Flow(stream, info, options).serveDial(dial);
}

/**
 * The workstation's side of an intercepted connection, on a stream it opened itself (to the manager, or to
 * an agent's direct port): sends OPEN, dials `target` (the daemon's own intercept target, never what the
 * far side names), then as serveDial. Logs how the flow ended.
 */
export function dialTarget(
  stream: TunnelStream,
  info: StreamInfo,
  target: { host: string; port: number },
  log: Logger = defaultLog,
): Promise<FlowOutcome> {
  stream.send(msg.open(info));
  const label = formatConnectionId(info.connId);
  return serveDial(
    stream,
    info,
    (signal, onread) => dialTcp(target.host, target.port, info.dialTimeoutMs, signal, onread),
    { log },
  ).then((o) => {
    if (o.kind === 'rejected')
      log.warn('could not dial the local target of an intercepted connection', {
        flow: label,
        target: `${target.host}:${target.port}`,
        reason: o.reason,
      });
    else log.debug('intercepted connection ended', { flow: label, outcome: o.kind });
    return o;
  });
}

/**
 * Waits for the stream's first message, which must be OPEN. Anything else, or nothing in time, resets the
 * stream and rejects. After it resolves, the next messages wait for the next onMessage handler.
 */
export function readOpen(stream: TunnelStream, timeoutMs: number): Promise<StreamInfo> {
  return new Promise((resolve, reject) => {
    let state = initialFlowState('awaiting-open');
    const done = (error?: string, info?: StreamInfo) => {
      clearTimeout(timer);
      stream.onMessage(undefined);
      stream.off('peer-end', onGone);
      stream.off('failure', onGone);
      if (info) return resolve(info);
      reject(new Error(error));
    };
    const refuse = (reason: string) => {
      stream.send(msg.reset(reason));
      stream.end();
      done(reason);
    };
    const timer = setTimeout(() => refuse(`no OPEN within ${timeoutMs} ms`), timeoutMs);
    const onGone = (reason?: string) => done(`the stream ended before OPEN${reason ? `: ${reason}` : ''}`);
    stream.once('peer-end', onGone);
    stream.once('failure', onGone);
    stream.onMessage((m) => {
      const t = receive(state, m);
      state = t.state;
      if (t.action.kind === 'open') done(undefined, t.action.info);
      else if (t.action.kind === 'protocol-error') refuse(t.action.reason);
      else if (t.action.kind === 'reset') done(`the peer reset the stream before OPEN: ${t.action.reason}`);
    });
  });
}

class Flow {
  private state: FlowState = initialFlowState('awaiting-open');
  private socket: net.Socket | undefined;
  private readonly coalescer: Coalescer<TunnelMessage>;
  /** For a socket the flow dials with `onread`: each read is one DATA message, no copy (rpc/tunnel-codec.ts). */
  private readonly reader: DataReader;
  private readonly onread: OnRead;
  /**
   * How a sent message's memory goes back for reuse once written (rpc/tunnel-codec.ts dataWritten): only
   * where the stream keeps no reference to a written message (TunnelStream.writesAreFinal).
   */
  private readonly written: ((m: TunnelMessage) => void) | undefined;
  private readonly log: Logger;
  private readonly label: string;
  private flushScheduled = false;
  /** The socket is paused because the stream's send budget is spent. */
  private socketWaitsForStream = false;
  /** The stream is paused because the socket's write buffer is full. */
  private streamWaitsForSocket = false;
  private bytesIn = 0;
  private bytesOut = 0;
  private lastSendAt = Date.now();
  private idleTimer: NodeJS.Timeout | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private phaseTimer: NodeJS.Timeout | undefined;
  private dialAbort: AbortController | undefined;
  private resolve!: (o: FlowOutcome) => void;
  private readonly outcome = new Promise<FlowOutcome>((r) => {
    this.resolve = r;
  });
  private done = false;
  /** What the socket sent while a replay is still possible (OriginateOptions.replay); then undefined. */
  private replaySent: Buffer[] | undefined;
  private replayBytes = 0;
  private socketEnded = false;
  /** The socket's 'data' and 'end' are handled (from DIAL_OK, or from OPEN with early data). */
  private reading = false;
  /** The originator paused its socket at the replay limit until DIAL_OK (early data). */
  private earlyPaused = false;
  /** The dialing side: early data from the originator, written once the destination is dialed. */
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private earlyHeld = false;

  constructor(
    private readonly stream: TunnelStream,
    private readonly info: StreamInfo,
    private readonly options: OriginateOptions,
  ) {
    if (options.replay) this.replaySent = [];
    this.written = stream.writesAreFinal ? dataWritten : undefined;
    // A full message's memory serves the next one once written (a bulk transfer's are all full).
    const max = options.maxDataBytes ?? MAX_DATA_BYTES;
    const reuse = this.written !== undefined;
    this.coalescer = new Coalescer(max, (chunks, bytes) =>
      encodedDataMessage(chunks, bytes, reuse && bytes === max),
    );
    this.reader = new DataReader(max);
    this.onread = { buffer: this.reader.region, callback: this.onSocketRead };
    this.log = options.log ?? defaultLog;
    this.label = formatConnectionId(info.connId);
    stream.on('drain', this.onStreamDrain);
    stream.on('peer-end', this.onStreamEnd);
    stream.on('failure', this.onStreamFailure);
    // The stream may have ended while its OPEN was being routed: act on it once the flow has started.
    const ending = stream.ending;
    if (ending)
      queueMicrotask(() =>
        ending.event === 'peer-end' ? this.onStreamEnd() : this.onStreamFailure(ending.reason),
      );
  }

  originate(socket: net.Socket): Promise<FlowOutcome> {
    this.state = initialFlowState('awaiting-dial');
    this.socket = socket;
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    if (!this.options.openedByFarSide) this.stream.send(msg.open(this.info));
    const waitMs = Math.min(this.options.dialDeadlineMs ?? Number.MAX_SAFE_INTEGER, this.info.dialTimeoutMs);
    this.phaseTimer = setTimeout(() => this.reject(`no DIAL_OK within ${waitMs} ms`, true), waitMs);
    // Without early data nothing is read from the client until the far side has dialed: the kernel holds
    // it meanwhile.
    if (this.options.earlyData) this.readSocket();
    else socket.pause();
    // Last: a far side that opened the stream may have answered already (DIAL_OK waits in the stream's
    // queue, delivered right here), and its answer must find the timer and the socket set up.
    this.stream.onMessage(this.onMessage);
    return this.outcome;
  }

  /** The OPEN/DIAL_OK exchange is done (openFlow): established, pump now. */
  pumpDialed(socket: net.Socket): Promise<FlowOutcome> {
    this.state = dialed(initialFlowState('dialing'));
    this.socket = socket;
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    this.stream.onMessage(this.onMessage);
    if (!this.done) this.startPump();
    return this.outcome;
  }

  serveDial(dial: Dialer): Promise<FlowOutcome> {
    this.state = initialFlowState('dialing');
    this.stream.onMessage(this.onMessage);
    this.dialAbort = new AbortController();
    dial(this.dialAbort.signal, this.onread).then(
      (socket) => {
        if (this.done) {
          socket.destroy();
          return;
        }
        this.dialAbort = undefined;
        this.socket = socket;
        socket.on('error', this.onSocketError);
        socket.on('close', this.onSocketClose);
        this.state = dialed(this.state);
        this.stream.send(msg.dialOk());
        this.writeEarlyData();
        this.startPump();
      },
      (e: Error) => {
        if (this.done) return;
        this.dialAbort = undefined;
        this.log.debug('dial failed', { flow: this.label, reason: e.message });
        this.stream.send(msg.dialReject(e.message));
        this.stream.end();
        this.finish({ kind: 'rejected', reason: e.message });
      },
    );
    return this.outcome;
  }

  private startPump(): void {
    clearTimeout(this.phaseTimer);
    const idle = this.info.idleTimeoutMs;
    if (idle > 0) {
      this.idleTimer = setTimeout(() => this.resetLocally(`idle for ${idle} ms`), idle);
      this.idleTimer.unref();
    }
    const keepalive = this.options.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS;
    if (keepalive > 0) {
      this.keepaliveTimer = setInterval(() => {
        if (Date.now() - this.lastSendAt >= keepalive) this.send(msg.keepalive());
      }, keepalive);
      this.keepaliveTimer.unref();
    }
    if (!this.reading) this.readSocket();
    else if (this.earlyPaused) {
      this.earlyPaused = false;
      if (!this.socketWaitsForStream) this.socket!.resume();
    }
  }

  private readSocket(): void {
    const socket = this.socket!;
    this.reading = true;
    this.options.reads?.to(this.onread);
    socket.on('data', this.onSocketData);
    socket.on('end', this.onSocketEnd);
    socket.on('drain', this.onSocketDrain);
    socket.resume();
  }

  /** DATA may go out: the flow is established, or waits for DIAL_OK with early data; no CLOSE_SEND yet. */
  private canSendData(): boolean {
    const phase = this.state.phase;
    const open = phase === 'established' || (phase === 'awaiting-dial' && this.options.earlyData === true);
    return open && !this.state.sentCloseSend;
  }

  /** The dialing side, just dialed: what the originator sent early goes first, then its FIN if it came. */
  private writeEarlyData(): void {
    for (const b of this.early) this.writeToSocket(b);
    this.early = [];
    if (this.earlyHeld) {
      this.earlyHeld = false;
      if (!this.streamWaitsForSocket) this.stream.resume();
    }
    if (this.state.receivedCloseSend) this.socket!.end();
  }

  private writeToSocket(data: Buffer): void {
    // A payload joined into pooled memory (tunnel/framed-call.ts) returns it once a real socket took it (the
    // kernel has the bytes); an in-memory end (agent/flow-socket.ts) calls back while its peer still holds them.
    const took =
      isJoined(data) && this.socket instanceof net.Socket
        ? this.socket!.write(data, (err) => {
            if (!err) receivedWritten(data);
          })
        : this.socket!.write(data);
    if (!took && !this.streamWaitsForSocket) {
      this.streamWaitsForSocket = true;
      this.stream.pause();
    }
  }

  // --- messages from the peer

  private readonly onMessage = (m: TunnelMessage): void => {
    const before = this.state.phase;
    const t = receive(this.state, m);
    this.state = t.state;
    this.act(t.action, before);
  };

  private act(a: FlowAction, before: FlowState['phase']): void {
    switch (a.kind) {
      case 'dial-ok':
        this.log.trace('dial ok', { flow: this.label });
        this.startPump();
        return;
      case 'dial-reject':
        this.reject(a.reason, false, true);
        return;
      case 'data': {
        this.idleTimer?.refresh();
        this.replaySent = undefined; // the far side answered: what it did cannot be done again elsewhere
        this.bytesOut += a.data.length;
        if (this.socket) this.writeToSocket(a.data);
        else this.keepEarlyData(a.data);
        return;
      }
      case 'close-send':
        // Early (still dialing): writeEarlyData() ends the socket once it is there.
        if (this.socket && !this.socket.destroyed) this.socket.end();
        this.finishIfClosed();
        return;
      case 'reset':
        this.log.debug('peer reset the flow', { flow: this.label, reason: a.reason });
        // Before DIAL_OK any reset means the far side could not take the flow (as a failed openFlow).
        if ((before === 'awaiting-dial' || isWorkstationUnavailable(a.reason)) && this.handOver(a.reason))
          return;
        this.abortSocket();
        this.stream.end();
        this.finish(this.resetOutcome('peer', a.reason || 'reset by peer'));
        return;
      case 'protocol-error':
        this.log.warn('tunnel protocol error', {
          flow: this.label,
          reason: a.reason,
          peer: this.stream.peer,
        });
        this.stream.send(msg.reset(a.reason));
        this.stream.end();
        this.abortSocket();
        this.finish(this.resetOutcome('local', a.reason));
        return;
      case 'open': // receive() only yields OPEN in awaiting-open, which a Flow never is in.
      case 'keepalive':
      case 'ignore':
        return;
    }
  }

  /** The dialing side: the originator's early data waits for the socket; a full 1 MiB pauses the stream. */
  private keepEarlyData(data: Buffer): void {
    this.early.push(data);
    this.earlyBytes += data.length;
    if (this.earlyBytes >= MAX_DATA_BYTES && !this.earlyHeld) {
      this.earlyHeld = true;
      this.stream.pause();
    }
  }

  // --- the socket

  private readonly onSocketData = (chunk: Buffer): void => {
    this.bytesIn += chunk.length;
    if (this.replaySent) this.keepForReplay(chunk);
    for (const full of this.coalescer.push(chunk)) this.sendData(full, this.written);
    if (!this.flushScheduled && this.coalescer.pendingBytes > 0) {
      this.flushScheduled = true;
      // setImmediate runs after the poll phase: the reads of this loop turn go out as one message.
      setImmediate(this.flush);
    }
  };

  /**
   * A read of a socket created with `onread` (no 'data' events then): a socket the flow dialed, or one
   * it reads through OriginateOptions.reads. Sent as it is.
   */
  private readonly onSocketRead = (bytes: number, into: Uint8Array): boolean => {
    this.bytesIn += bytes;
    const m = this.reader.commit(bytes, into);
    // A copy: the message's memory may serve later reads once it is written.
    if (this.replaySent) this.keepForReplay(Buffer.from(m.data));
    if (!this.canSendData()) return true;
    // Reads of the socket's stream before the flow took its reads go first.
    if (this.coalescer.pendingBytes > 0) this.flush();
    // Its memory serves later reads once written, where the stream then keeps no reference.
    this.sendData(m, this.written);
    return true;
  };

  /** What the socket sent while a replay is still possible (OriginateOptions.replay), up to its limit. */
  private keepForReplay(chunk: Buffer): void {
    const sent = this.replaySent!;
    this.replayBytes += chunk.length;
    const limit = this.options.replay!.limit;
    if (this.state.phase === 'awaiting-dial') {
      // Early data: everything read before DIAL_OK can still go elsewhere; stop reading at the limit.
      sent.push(chunk);
      if (this.replayBytes >= limit && !this.earlyPaused) {
        this.earlyPaused = true;
        this.socket!.pause();
      }
    } else if (this.replayBytes > limit) this.replaySent = undefined;
    else sent.push(chunk);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (!this.canSendData()) return;
    const m = this.coalescer.take();
    if (m) this.sendData(m, this.written);
  };

  private sendData(m: TunnelMessage, written?: (m: TunnelMessage) => void): void {
    this.idleTimer?.refresh();
    if (!this.send(m, written) && !this.socketWaitsForStream) {
      this.socketWaitsForStream = true;
      this.socket!.pause();
    }
  }

  private send(m: TunnelMessage, written?: (m: TunnelMessage) => void): boolean {
    this.lastSendAt = Date.now();
    return this.stream.send(m, written);
  }

  private readonly onSocketEnd = (): void => {
    this.socketEnded = true;
    if (!this.canSendData()) return;
    this.flush();
    this.send(msg.closeSend());
    this.state = sendCloseSend(this.state);
    this.finishIfClosed();
  };

  private readonly onSocketError = (e: Error): void => {
    this.resetLocally(e.message);
  };

  private readonly onSocketClose = (): void => {
    if (this.state.phase === 'awaiting-dial')
      this.reject('the connection closed before the dial completed', true);
    else this.resetLocally('the connection closed');
  };

  private readonly onSocketDrain = (): void => {
    if (!this.streamWaitsForSocket) return;
    this.streamWaitsForSocket = false;
    this.stream.resume();
  };

  // --- the stream

  private readonly onStreamDrain = (): void => {
    if (!this.socketWaitsForStream) return;
    this.socketWaitsForStream = false;
    if (!this.earlyPaused) this.socket?.resume();
  };

  private readonly onStreamEnd = (): void => {
    if (this.state.phase === 'closed') {
      // Normal end after both CLOSE_SENDs or a RESET: make sure our side is finished too.
      this.stream.end();
      return;
    }
    this.failFromPeer('the peer ended the stream without closing the flow');
  };

  private readonly onStreamFailure = (reason?: string): void => {
    if (this.state.phase === 'closed') return;
    this.failFromPeer(`the stream failed: ${reason ?? 'unknown'}`);
  };

  private failFromPeer(reason: string): void {
    this.log.debug('tunnel stream lost', { flow: this.label, reason });
    const wasDialing = this.state.phase === 'awaiting-dial' || this.state.phase === 'dialing';
    if (this.handOver(reason)) return;
    this.state = abort(this.state);
    this.abortSocket();
    this.stream.end();
    this.finish(wasDialing ? { kind: 'rejected', reason } : this.resetOutcome('peer', reason));
  }

  // --- endings

  /** A replay is possible: kept bytes (the far side has sent none), a live socket, the flow not over. */
  private canHandOver(): boolean {
    return this.replaySent !== undefined && !this.done && this.socket !== undefined && !this.socket.destroyed;
  }

  /**
   * The far side is gone before it answered (OriginateOptions.replay): the socket, detached from this
   * flow and paused, goes to the fallback with what it sent. False when a replay is not possible.
   */
  private handOver(reason: string): boolean {
    if (!this.canHandOver()) return false;
    const sent = this.replaySent!;
    const socket = this.socket!;
    socket.off('data', this.onSocketData);
    socket.off('end', this.onSocketEnd);
    socket.off('drain', this.onSocketDrain);
    socket.off('error', this.onSocketError);
    socket.off('close', this.onSocketClose);
    socket.pause();
    this.options.reads?.to(undefined);
    this.socket = undefined;
    this.replaySent = undefined;
    this.state = abort(this.state);
    this.stream.end();
    this.log.debug('the far side went away before answering: handing the connection over', {
      flow: this.label,
      reason,
      bytes: this.replayBytes,
    });
    this.finish({ kind: 'handed-over', reason, bytesIn: this.bytesIn, bytesOut: 0 });
    this.options.replay!.fallback(socket, sent, this.socketEnded, reason);
    return true;
  }

  /**
   * Dial failed (reject, timeout, client gone before): reset the accepted socket, or hand it over
   * (replay) unless the far side itself refused (`refused`: DIAL_REJECT without WORKSTATION_UNAVAILABLE).
   */
  private reject(reason: string, sendReset: boolean, refused = false): void {
    if (this.done) return;
    const handOver = (!refused || isWorkstationUnavailable(reason)) && this.canHandOver();
    // Closed first: the stream failure a cancel causes is this side's own doing, not a loss to act on.
    this.state = abort(this.state);
    // This side gives up. With early data the manager may hold what the socket sent for a workstation still
    // to come: cancel, so that it drops the flow at once, rather than a RESET that would wait behind that
    // data (and a connection handed over must not reach a workstation as well).
    if (sendReset && this.options.earlyData) this.stream.abort(reason);
    else if (sendReset) this.stream.send(msg.reset(reason));
    if (handOver) {
      this.handOver(reason);
      return;
    }
    this.stream.end();
    this.abortSocket();
    this.finish(refused ? { kind: 'rejected', reason, refused } : { kind: 'rejected', reason });
  }

  private resetLocally(reason: string): void {
    if (this.state.phase === 'closed' || this.done) return;
    this.log.debug('resetting the flow', { flow: this.label, reason });
    this.state = abort(this.state);
    this.stream.send(msg.reset(reason));
    this.stream.end();
    this.abortSocket();
    this.finish(this.resetOutcome('local', reason));
  }

  private finishIfClosed(): void {
    if (this.state.phase !== 'closed') return;
    this.stream.end();
    this.finish({ kind: 'closed', bytesIn: this.bytesIn, bytesOut: this.bytesOut });
  }

  private abortSocket(): void {
    this.dialAbort?.abort();
    const s = this.socket;
    if (s && !s.destroyed) s.resetAndDestroy();
  }

  private resetOutcome(by: 'local' | 'peer', reason: string): FlowOutcome {
    return { kind: 'reset', by, reason, bytesIn: this.bytesIn, bytesOut: this.bytesOut };
  }

  private finish(outcome: FlowOutcome): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.phaseTimer);
    clearTimeout(this.idleTimer);
    clearInterval(this.keepaliveTimer);
    this.stream.off('drain', this.onStreamDrain);
    // The socket may still flush its last bytes after a clean close; 'close' must not count as a reset.
    this.socket?.off('close', this.onSocketClose);
    this.socket?.off('error', this.onSocketError);
    this.socket?.on('error', () => {});
    this.log.trace('flow finished', { flow: this.label, outcome: outcome.kind });
    this.resolve(outcome);
  }
}
