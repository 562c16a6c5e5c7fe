// The manager's half of a flow it does not dial itself: two tunnel streams (the originator's, e.g. an
// agent's, and the dialer's, e.g. the intercepting client's) piped into each other after both OPENs.
// Every message is checked against the flow's state machine, so a misbehaving end gets a RESET and
// cannot confuse the other; backpressure is passed through (a slow reader pauses the far writer).
import { createLogger, type Logger } from '../logging/logger.js';
import { dialed, type FlowState, initialFlowState, receive } from './flow-state.js';
import { MAX_DATA_BYTES, msg, type TunnelMessage } from './messages.js';
import type { TunnelStream } from './stream.js';

export type RelayOutcome =
  | { kind: 'closed'; bytesToDialer: number; bytesToOriginator: number }
  | { kind: 'rejected'; reason: string }
  | { kind: 'reset'; reason: string; bytesToDialer: number; bytesToOriginator: number };

/**
 * Pipes `originator` (sent OPEN, waits for the dial) and `dialer` (dials, answers DIAL_OK/DIAL_REJECT)
 * until both directions are closed or either end resets or fails. Both OPENs must have been consumed.
 */
export function relay(
  originator: TunnelStream,
  dialer: TunnelStream,
  options: {
    label: string;
    log?: Logger;
    /**
     * What the originator's RESET reason starts with when the dialer's stream is lost (the intercept's
     * relay: WORKSTATION_UNAVAILABLE, so that an agent can still give the connection to its app).
     */
    dialerGone?: string;
    /**
     * The dialer's OPEN says it takes early data (messages.ts EARLY_DATA_VERSION): the originator's DATA
     * and CLOSE_SEND go to it at once. Otherwise what the originator sends early waits here for DIAL_OK.
     */
    dialerTakesEarlyData?: boolean;
  },
): Promise<RelayOutcome> {
  const log = options.log ?? createLogger('tunnel/relay');
  return new Promise((resolve) => {
    // What each end has sent so far, as its receiver would validate it.
    let fromOriginator: FlowState = initialFlowState('dialing');
    let fromDialer: FlowState = initialFlowState('awaiting-dial');
    const bytes = { toDialer: 0, toOriginator: 0 };
    /** Streams paused because the other side's send budget is spent. */
    const paused = new Set<TunnelStream>();
    let done = false;
    /** The originator's early messages, for a dialer that takes none before its DIAL_OK. */
    let held: TunnelMessage[] | undefined = options.dialerTakesEarlyData ? undefined : [];
    let heldBytes = 0;

    const finish = (outcome: RelayOutcome) => {
      if (done) return;
      done = true;
      for (const s of paused) s.resume();
      originator.end();
      dialer.end();
      log.trace('relay finished', { flow: options.label, outcome: outcome.kind });
      resolve(outcome);
    };
    const resetBoth = (reason: string, except?: TunnelStream) => {
      for (const s of [originator, dialer]) if (s !== except) s.send(msg.reset(reason));
      finish({ kind: 'reset', reason, bytesToDialer: bytes.toDialer, bytesToOriginator: bytes.toOriginator });
    };
    const maybeClosed = () => {
      if (fromOriginator.receivedCloseSend && fromDialer.receivedCloseSend)
        finish({ kind: 'closed', bytesToDialer: bytes.toDialer, bytesToOriginator: bytes.toOriginator });
    };

    const forward = (from: TunnelStream, to: TunnelStream, m: TunnelMessage) => {
      if (m.data.length > 0) {
        if (to === dialer) bytes.toDialer += m.data.length;
        else bytes.toOriginator += m.data.length;
      }
      if (!to.send(m) && !paused.has(from)) {
        paused.add(from);
        from.pause();
        to.once('drain', () => {
          paused.delete(from);
          from.resume();
        });
      }
    };

    originator.onMessage((m) => {
      if (done) return; // late messages after the end are read and dropped
      const t = receive(fromOriginator, m);
      fromOriginator = t.state;
      const a = t.action;
      if ((a.kind === 'data' || a.kind === 'close-send') && held) {
        // Early data for a dialer that has not dialed and takes none: it goes after DIAL_OK.
        held.push(m);
        heldBytes += m.data.length;
        if (heldBytes >= MAX_DATA_BYTES && !paused.has(originator)) {
          paused.add(originator);
          originator.pause();
        }
      } else if (a.kind === 'data' || a.kind === 'keepalive') forward(originator, dialer, m);
      else if (a.kind === 'close-send') {
        forward(originator, dialer, m);
        maybeClosed();
      } else if (a.kind === 'reset') {
        dialer.send(m);
        finish({ kind: 'reset', reason: a.reason, ...renamed(bytes) });
      } else if (a.kind === 'protocol-error') {
        log.warn('tunnel protocol error from the originator', { flow: options.label, reason: a.reason });
        resetBoth(a.reason);
      }
    });
    dialer.onMessage((m) => {
      if (done) return;
      const t = receive(fromDialer, m);
      fromDialer = t.state;
      const a = t.action;
      if (a.kind === 'dial-ok') {
        fromOriginator = dialed(fromOriginator);
        forward(dialer, originator, m);
        const early = held ?? [];
        held = undefined;
        if (paused.delete(originator)) originator.resume();
        for (const e of early) forward(originator, dialer, e);
        maybeClosed();
      } else if (a.kind === 'dial-reject') {
        originator.send(m);
        finish({ kind: 'rejected', reason: a.reason });
      } else if (a.kind === 'data' || a.kind === 'keepalive') forward(dialer, originator, m);
      else if (a.kind === 'close-send') {
        forward(dialer, originator, m);
        maybeClosed();
      } else if (a.kind === 'reset') {
        originator.send(m);
        finish({ kind: 'reset', reason: a.reason, ...renamed(bytes) });
      } else if (a.kind === 'protocol-error') {
        log.warn('tunnel protocol error from the dialer', { flow: options.label, reason: a.reason });
        resetBoth(a.reason);
      }
    });

    for (const [stream, name] of [
      [originator, 'originator'],
      [dialer, 'dialer'],
    ] as const) {
      const lost = (reason?: string) => {
        if (done) return;
        const why = `${name === 'dialer' ? (options.dialerGone ?? '') : ''}the ${name}'s stream ended: ${reason ?? 'ended without closing the flow'}`;
        log.debug('relay lost an end', { flow: options.label, reason: why });
        resetBoth(why, stream);
      };
      stream.on('peer-end', () => lost());
      stream.on('failure', lost);
      const ending = stream.ending;
      if (ending) queueMicrotask(() => lost(ending.reason));
    }
  });
}

function renamed(b: { toDialer: number; toOriginator: number }) {
  return { bytesToDialer: b.toDialer, bytesToOriginator: b.toOriginator };
}
