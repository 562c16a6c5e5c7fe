// The state machine of one end of a tunnel flow, as a pure function of the messages it receives.
// The socket pump, the dialing side and the manager's relay all validate the peer's messages with it,
// so a malformed or out-of-order message (DATA before OPEN, an unknown code, DATA after CLOSE_SEND)
// turns into a RESET with a reason, never into a crash or a silently corrupted stream.
import { codeName, type StreamInfo, TunnelCode, type TunnelMessage } from './messages.js';

export type FlowPhase =
  /** The answering end, before the peer's OPEN. */
  | 'awaiting-open'
  /**
   * The answering end, dialing the destination. The originator may already send DATA and CLOSE_SEND
   * (early data, tunnel version 3: EARLY_DATA_VERSION): the answering end keeps them until it has dialed.
   */
  | 'dialing'
  /** The originating end, after its OPEN, waiting for DIAL_OK or DIAL_REJECT (it may send early data). */
  | 'awaiting-dial'
  /** Data flows both ways until each side has sent CLOSE_SEND. */
  | 'established'
  /** Finished: both CLOSE_SENDs, a RESET, a reject, or a protocol error. Later messages are ignored. */
  | 'closed';

export interface FlowState {
  readonly phase: FlowPhase;
  /** This end sent CLOSE_SEND: it sends no more DATA. */
  readonly sentCloseSend: boolean;
  /** The peer sent CLOSE_SEND: it sends no more DATA. */
  readonly receivedCloseSend: boolean;
}

/** What the receiving end must do with a message. */
export type FlowAction =
  | { kind: 'open'; info: StreamInfo }
  | { kind: 'dial-ok' }
  | { kind: 'dial-reject'; reason: string }
  | { kind: 'data'; data: Buffer }
  /** The peer will send no more data: end the socket's write side (FIN). */
  | { kind: 'close-send' }
  /** The peer aborted the flow: reset the socket (RST). */
  | { kind: 'reset'; reason: string }
  | { kind: 'keepalive' }
  /** The message breaks the protocol: send RESET with this reason and reset the socket. */
  | { kind: 'protocol-error'; reason: string }
  /** A late message after the flow closed (a RESET racing a CLOSE_SEND): nothing to do. */
  | { kind: 'ignore' };

export interface Transition {
  state: FlowState;
  action: FlowAction;
}

export function initialFlowState(phase: FlowPhase): FlowState {
  return { phase, sentCloseSend: false, receivedCloseSend: false };
}

const closed = (s: FlowState): FlowState => ({ ...s, phase: 'closed' });

function protocolError(s: FlowState, reason: string): Transition {
  return { state: closed(s), action: { kind: 'protocol-error', reason } };
}

function unexpected(s: FlowState, m: TunnelMessage): Transition {
  return protocolError(s, `unexpected ${codeName(m.code)} while ${s.phase}`);
}

export function receive(s: FlowState, m: TunnelMessage): Transition {
  if (s.phase === 'closed') return { state: s, action: { kind: 'ignore' } };
  // RESET and KEEPALIVE are valid in every open phase.
  if (m.code === TunnelCode.RESET) return { state: closed(s), action: { kind: 'reset', reason: m.error } };
  if (m.code === TunnelCode.KEEPALIVE) return { state: s, action: { kind: 'keepalive' } };
  switch (s.phase) {
    case 'awaiting-open':
      if (m.code !== TunnelCode.OPEN) return unexpected(s, m);
      if (!m.open) return protocolError(s, 'OPEN without stream info');
      return { state: { ...s, phase: 'dialing' }, action: { kind: 'open', info: m.open } };
    case 'dialing':
      return dataOrCloseSend(s, m);
    case 'awaiting-dial':
      if (m.code === TunnelCode.DIAL_OK)
        return { state: { ...s, phase: 'established' }, action: { kind: 'dial-ok' } };
      if (m.code === TunnelCode.DIAL_REJECT)
        return { state: closed(s), action: { kind: 'dial-reject', reason: m.error || 'dial rejected' } };
      return unexpected(s, m);
    case 'established':
      return dataOrCloseSend(s, m);
  }
}

/** DATA and CLOSE_SEND, the messages of an established flow (and the early data of a dialing one). */
function dataOrCloseSend(s: FlowState, m: TunnelMessage): Transition {
  if (m.code === TunnelCode.DATA) {
    if (s.receivedCloseSend) return protocolError(s, 'DATA after CLOSE_SEND');
    return { state: s, action: { kind: 'data', data: m.data } };
  }
  if (m.code === TunnelCode.CLOSE_SEND) {
    if (s.receivedCloseSend) return protocolError(s, 'CLOSE_SEND twice');
    const next = { ...s, receivedCloseSend: true };
    return { state: next.sentCloseSend ? closed(next) : next, action: { kind: 'close-send' } };
  }
  return unexpected(s, m);
}

/** This end dialed its destination and sends DIAL_OK. */
export function dialed(s: FlowState): FlowState {
  return s.phase === 'dialing' ? { ...s, phase: 'established' } : s;
}

/** This end sends CLOSE_SEND (its socket reached EOF). */
export function sendCloseSend(s: FlowState): FlowState {
  const next = { ...s, sentCloseSend: true };
  return next.receivedCloseSend ? closed(next) : next;
}

/** This end resets the flow (socket error, timeout) or the stream failed. */
export function abort(s: FlowState): FlowState {
  return closed(s);
}

/** Both sides closed their sending direction: the gRPC stream can end cleanly. */
export function bothClosed(s: FlowState): boolean {
  return s.sentCloseSend && s.receivedCloseSend;
}
