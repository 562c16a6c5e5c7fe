// One UDP flow (client address:port <-> destination address:port) carried over one tunnel stream: OPEN with
// conn_id.protocol 17, then each DATA message is exactly one datagram, both ways.
//
//   openUdp(stream, info)   the originating side (the root daemon): OPEN, wait for DIAL_OK, then datagrams.
//   serveUdp(stream, info)  the dialing side once OPEN has been read (the manager): a connected UDP socket
//                           to conn_id.dst, DIAL_OK, then datagrams until either side closes or it idles.
//
// UDP has no half close: CLOSE_SEND from either side ends the flow, and the other side answers with its
// own CLOSE_SEND. Datagrams are dropped (never queued without bound) when the stream's send budget is spent,
// as a network would; ICMP "port unreachable" seen by the dialing side's socket ends the flow with RESET.
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { createLogger, type Logger } from '../logging/logger.js';
import { abort, dialed, type FlowState, initialFlowState, receive, sendCloseSend } from './flow-state.js';
import { formatConnectionId, msg, type StreamInfo, type TunnelMessage } from './messages.js';
import type { TunnelStream } from './stream.js';

export const UDP_PROTOCOL = 17;
/** A UDP flow with no datagram either way for this long ends (when OPEN does not say). */
export const DEFAULT_UDP_IDLE_TIMEOUT_MS = 60_000;

const defaultLog = createLogger('tunnel/udp');

/** The originating side's view of an established UDP flow. */
export interface UdpTunnelFlow {
  /** Sends one datagram; false when it was dropped (the stream is over its send budget or closed). */
  send(datagram: Buffer): boolean;
  onDatagram: ((datagram: Buffer) => void) | undefined;
  /** The flow ended (the far side closed it, reset it, or the stream failed); called once. */
  onClose: ((reason: string) => void) | undefined;
  /** Ends the flow from this side. */
  close(): void;
}

export class UdpDialRejected extends Error {
  override name = 'UdpDialRejected';
}

/** Sends OPEN and resolves with the flow on DIAL_OK; rejects with UdpDialRejected otherwise. */
export function openUdp(
  stream: TunnelStream,
  info: StreamInfo,
  options: { log?: Logger } = {},
): Promise<UdpTunnelFlow> {
  const log = options.log ?? defaultLog;
  const label = formatConnectionId(info.connId);
  return new Promise((resolve, reject) => {
    let state: FlowState = initialFlowState('awaiting-dial');
    let flow: OriginatedUdpFlow | undefined;
    const timer = setTimeout(
      () => fail(`no answer to the UDP flow within ${info.dialTimeoutMs} ms`, true),
      info.dialTimeoutMs,
    );
    const fail = (reason: string, sendReset: boolean) => {
      clearTimeout(timer);
      state = abort(state);
      if (sendReset) stream.send(msg.reset(reason));
      stream.end();
      if (flow) flow.closed(reason);
      else reject(new UdpDialRejected(reason));
    };
    stream.on('peer-end', () => {
      if (state.phase !== 'closed') fail('the stream ended', false);
    });
    stream.on('failure', (reason?: string) => {
      if (state.phase !== 'closed') fail(`the stream failed: ${reason ?? 'unknown'}`, false);
    });
    stream.onMessage((m: TunnelMessage) => {
      const t = receive(state, m);
      state = t.state;
      const a = t.action;
      switch (a.kind) {
        case 'dial-ok':
          clearTimeout(timer);
          flow = new OriginatedUdpFlow(
            stream,
            () => state,
            (s) => {
              state = s;
            },
          );
          log.trace('udp flow open', { flow: label });
          resolve(flow);
          return;
        case 'dial-reject':
          fail(a.reason, false);
          return;
        case 'data':
          flow?.onDatagram?.(a.data);
          return;
        case 'close-send':
          // The far side ended the flow: answer with ours, which completes the close.
          if (!state.sentCloseSend) {
            stream.send(msg.closeSend());
            state = sendCloseSend(state);
          }
          stream.end();
          flow?.closed('closed by the far side');
          return;
        case 'reset':
          fail(a.reason || 'reset by the far side', false);
          return;
        case 'protocol-error':
          log.warn('tunnel protocol error', { flow: label, reason: a.reason });
          fail(a.reason, true);
          return;
        default:
          return;
      }
    });
    stream.send(msg.open(info));
  });
}

class OriginatedUdpFlow implements UdpTunnelFlow {
  onDatagram: ((datagram: Buffer) => void) | undefined;
  onClose: ((reason: string) => void) | undefined;
  private ended = false;
  private blocked = false;

  constructor(
    private readonly stream: TunnelStream,
    private readonly getState: () => FlowState,
    private readonly setState: (s: FlowState) => void,
  ) {
    stream.on('drain', () => {
      this.blocked = false;
    });
  }

  send(datagram: Buffer): boolean {
    if (this.ended || this.blocked || this.getState().sentCloseSend) return false;
    if (!this.stream.send(msg.data(datagram))) this.blocked = true;
    return true;
  }

  close(): void {
    if (this.ended) return;
    const s = this.getState();
    if (s.phase !== 'closed' && !s.sentCloseSend) {
      this.stream.send(msg.closeSend());
      this.setState(sendCloseSend(s));
    }
    // Wait for the far side's CLOSE_SEND only briefly: a UDP flow has nothing left to deliver.
    this.stream.end();
    this.closed('closed');
  }

  closed(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.onClose?.(reason);
  }
}

export type UdpOutcome =
  | { kind: 'closed'; datagramsIn: number; datagramsOut: number }
  | { kind: 'rejected'; reason: string }
  | { kind: 'reset'; reason: string; datagramsIn: number; datagramsOut: number };

/**
 * The dialing side, once OPEN (protocol 17) has been read: connects a UDP socket to conn_id.dst, answers
 * DIAL_OK (or DIAL_REJECT), then relays datagrams until a side closes, the flow idles out, or the
 * destination answers ICMP unreachable.
 */
export function serveUdp(
  stream: TunnelStream,
  info: StreamInfo,
  options: { log?: Logger; idleTimeoutMs?: number } = {},
): Promise<UdpOutcome> {
  const log = options.log ?? defaultLog;
  const label = formatConnectionId(info.connId);
  const dst = info.connId;
  return new Promise((resolve) => {
    let state: FlowState = initialFlowState('dialing');
    let done = false;
    let datagramsIn = 0; // from the originator, sent to the destination
    let datagramsOut = 0; // from the destination, sent to the originator
    let blocked = false;
    let idleTimer: NodeJS.Timeout | undefined;
    const family = dst && net.isIPv6(dst.dstIp) ? 'udp6' : 'udp4';
    const socket = dgram.createSocket({ type: family });
    const finish = (outcome: UdpOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(idleTimer);
      stream.onMessage(undefined);
      stream.end();
      try {
        socket.close();
      } catch {
        // already closed
      }
      log.trace('udp flow finished', { flow: label, outcome: outcome.kind });
      resolve(outcome);
    };
    const reset = (reason: string) => {
      state = abort(state);
      stream.send(msg.reset(reason));
      finish({ kind: 'reset', reason, datagramsIn, datagramsOut });
    };
    if (!dst || !net.isIP(dst.dstIp) || !dst.dstPort) {
      stream.send(msg.dialReject('OPEN names no IP destination'));
      finish({ kind: 'rejected', reason: 'OPEN names no IP destination' });
      return;
    }
    const where = family === 'udp6' ? `[${dst.dstIp}]:${dst.dstPort}` : `${dst.dstIp}:${dst.dstPort}`;
    const idleMs = options.idleTimeoutMs ?? (info.idleTimeoutMs || DEFAULT_UDP_IDLE_TIMEOUT_MS);
    const touch = () => idleTimer?.refresh();

    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (state.phase === 'dialing') {
        stream.send(msg.dialReject(`cannot reach ${where}: ${e.message}`));
        finish({ kind: 'rejected', reason: e.message });
        return;
      }
      reset(
        e.code === 'ECONNREFUSED'
          ? `${where} refused the datagram (port unreachable)`
          : `${where}: ${e.message}`,
      );
    });
    socket.on('message', (datagram) => {
      if (done || state.sentCloseSend) return;
      touch();
      if (blocked) return; // over budget: drop, as a congested network would
      datagramsOut++;
      if (!stream.send(msg.data(datagram))) blocked = true;
    });
    stream.on('drain', () => {
      blocked = false;
    });
    stream.on('peer-end', () => finish({ kind: 'closed', datagramsIn, datagramsOut }));
    stream.on('failure', (reason?: string) =>
      finish({ kind: 'reset', reason: reason ?? 'the stream failed', datagramsIn, datagramsOut }),
    );
    stream.onMessage((m) => {
      const t = receive(state, m);
      state = t.state;
      const a = t.action;
      switch (a.kind) {
        case 'data':
          touch();
          datagramsIn++;
          socket.send(a.data, (e) => {
            if (e) log.debug('udp send failed', { flow: label, error: e.message });
          });
          return;
        case 'close-send':
          if (!state.sentCloseSend) {
            stream.send(msg.closeSend());
            state = sendCloseSend(state);
          }
          finish({ kind: 'closed', datagramsIn, datagramsOut });
          return;
        case 'reset':
          finish({ kind: 'reset', reason: a.reason, datagramsIn, datagramsOut });
          return;
        case 'protocol-error':
          log.warn('tunnel protocol error', { flow: label, reason: a.reason });
          reset(a.reason);
          return;
        default:
          return;
      }
    });
    socket.connect(dst.dstPort, dst.dstIp, () => {
      if (done) return;
      state = dialed(state);
      stream.send(msg.dialOk());
      idleTimer = setTimeout(() => {
        // Idle: end it like a close from this side.
        stream.send(msg.closeSend());
        state = sendCloseSend(state);
        finish({ kind: 'closed', datagramsIn, datagramsOut });
      }, idleMs);
      idleTimer.unref();
    });
  });
}
