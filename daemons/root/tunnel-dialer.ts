// The VIF's flows as tunnel streams to the traffic manager, which dials each destination in the cluster.
//
// TCP: the VIF holds the client's SYN until the destination answered, so this dials first (openFlow:
// OPEN, then DIAL_OK or DIAL_REJECT) and only then gets the accepted socket to pump (originate with
// `dialed`). What the destination sends in between (a server that speaks first) waits in the stream.
//
// A manager that takes flow connections (ClusterInfo.flow_connections) gets each TCP flow on a connection
// of its own to its port (through the workstation's port-forward: a SPDY stream of its own), framed by
// tunnel/framed-call.ts instead of a Tunnel call on the shared HTTP/2 connection, and the connection is
// kept for the next flow (tunnel/flow-pool.ts). UDP flows stay Tunnel calls.
//
// While the manager cannot take flows — it is stopping (a rollout, a deleted pod), its new pod is not
// Ready yet, it does not know the session yet (it restarted and the user daemon has not arrived again),
// the port-forward to it broke — a new TCP flow waits for it, its SYN held, retrying for up to
// MANAGER_GAP_MS, instead of being refused at once: a manager restart delays new connections by about
// the time its new pod takes to be Ready (docs/faults.md), and fails none.

import type * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { within } from '../../command/wait.js';
import type { Logger } from '../../logging/logger.js';
import type { ManagerClient } from '../../rpc/gen/manager.js';
import { WORKSTATION_WINDOWS } from '../../rpc/grpc-options.js';
import { duplicate } from '../../sys/descriptor.js';
import { FlowDialRejected, openFlow, originate } from '../../tunnel/flow.js';
import type { FlowConnectionPool } from '../../tunnel/flow-pool.js';
import {
  isManagerUnavailable,
  MANAGER_SHUTTING_DOWN,
  msg,
  type StreamInfo,
  streamInfo,
} from '../../tunnel/messages.js';
import { movedToReadSwitch, readSwitchOf } from '../../tunnel/read-switch.js';
import { TunnelStream } from '../../tunnel/stream.js';
import { DEFAULT_UDP_IDLE_TIMEOUT_MS, openUdp, UdpDialRejected } from '../../tunnel/udp-flow.js';
import {
  DialRejectedError,
  type FlowDialer,
  type FlowId,
  type TcpDial,
  type UdpFlow,
} from '../../vif/flows.js';

/** How long the manager may take to dial a destination in the cluster. */
export const DIAL_TIMEOUT_MS = 5_000;

/**
 * How long a new TCP flow waits for a manager that cannot take it (see above). A deleted manager pod's
 * successor is Ready about 2 s later on the lab; this leaves room for a slower node and the session's
 * re-arrival, and ends the wait well before a client's own connect timeout would (Linux gives up on a
 * SYN after about two minutes).
 */
export const MANAGER_GAP_MS = 10_000;
/** The pauses between attempts while the manager is unavailable; the last one repeats. */
const RETRY_PAUSES_MS = [100, 200, 300, 500];

/** Whether a failed dial says the manager is unavailable (retry) rather than anything about the destination. */
function managerUnavailable(e: unknown): e is FlowDialRejected {
  return e instanceof FlowDialRejected && (e.gone || isManagerUnavailable(e.message));
}

export interface TunnelDialerOptions {
  client: ManagerClient;
  /** The client session the flows belong to (it can change when the user daemon reconnects). */
  sessionId: () => string;
  log: Logger;
  dialTimeoutMs?: number;
  udpIdleTimeoutMs?: number;
  /** Flow connections to the manager's port, and whether the manager takes them now. */
  flowConnections?: {
    pool: FlowConnectionPool<Duplex>;
    enabled: () => boolean;
    /** Whether the manager's flow connections take WINDOW frames now (ClusterInfo.flow_windows). */
    windows?: () => boolean;
    /** The session's credential, which each OPEN carries (it changes with the session). */
    credential: () => string;
  };
  /** How long a new TCP flow waits for an unavailable manager (MANAGER_GAP_MS). */
  managerGapMs?: number;
  /** The pauses between attempts while the manager is unavailable (RETRY_PAUSES_MS; tests). */
  retryPausesMs?: readonly number[];
}

/** A time the manager could not take flows, as the flows waiting it out see it. */
interface Outage {
  since: number;
  reason: string;
  /** Flows that waited in it (for the log line at its end). */
  flows: number;
  /** Failed attempts so far: the next pause. */
  attempts: number;
  /** Settles when the flow finding out whether the manager is back knows (the others wait for it). */
  probe: Promise<void> | undefined;
}

export class TunnelFlowDialer implements FlowDialer {
  private closed = false;
  private outage: Outage | undefined;
  /** Ends the pause before the next attempt of the flows waiting for the manager. */
  private readonly wakeWaiting = new Set<() => void>();

  constructor(private readonly o: TunnelDialerOptions) {}

  /** Tunnel calls from now on go on `client` (a new user daemon took the VIF over: its forward's address). */
  replaceClient(client: ManagerClient): void {
    this.o.client = client;
  }

  /** The session ends: flows waiting for the manager give up now, in their pause too. */
  close(): void {
    this.closed = true;
    this.tryAgainNow();
  }

  /**
   * The manager may take flows again (the user daemon arrived at it again: a new session): the flows
   * waiting for it try now rather than after their pause.
   */
  tryAgainNow(): void {
    for (const wake of this.wakeWaiting) wake();
    this.wakeWaiting.clear();
  }

  /**
   * A VIF connection moves to a socket created with a ReadSwitch on a duplicate of its descriptor, so that
   * its flow reads it straight into DATA messages (tunnel/flow.ts, OriginateOptions.reads) instead of
   * through the socket's stream: no 64 KiB allocation per read, no copy into the message, no turn of the
   * event loop to gather a message from the reads. Without dup(2) (no koffi) it is read as before.
   */
  adopt(socket: net.Socket): net.Socket {
    const why = (reason: string) =>
      this.o.log.debug('a VIF connection is read through its stream', { reason });
    return movedToReadSwitch(socket, duplicate, { allowHalfOpen: true, why }) ?? socket;
  }

  private info(id: FlowId, idleTimeoutMs?: number): StreamInfo {
    return streamInfo({
      connId: { ...id },
      sessionId: this.o.sessionId(),
      dialTimeoutMs: this.o.dialTimeoutMs ?? DIAL_TIMEOUT_MS,
      ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    });
  }

  async dialTcp(id: FlowId): Promise<TcpDial> {
    const until = Date.now() + (this.o.managerGapMs ?? MANAGER_GAP_MS);
    /** The outage this flow counted itself in. */
    let counted: Outage | undefined;
    const count = (o: Outage) => {
      if (counted !== o) o.flows++;
      counted = o;
    };
    for (;;) {
      const outage = this.outage;
      if (outage) {
        count(outage);
        if (this.closed) throw new DialRejectedError(outage.reason);
        if (outage.probe) {
          // One flow at a time finds out whether the manager is back (each attempt may cost the user
          // daemon a port-forward and a lookup of the manager's pod); the others wait for its answer.
          const answered = await within(
            outage.probe.then(() => true),
            Math.max(0, until - Date.now()),
          );
          if (!answered) throw new DialRejectedError(outage.reason);
          continue;
        }
      }
      let answered = () => {};
      if (outage)
        outage.probe = new Promise<void>((r) => {
          answered = r;
        });
      try {
        const dial = await this.dialOnce(id);
        this.managerAnswered();
        return dial;
      } catch (e) {
        if (!managerUnavailable(e)) {
          this.managerAnswered();
          throw e instanceof FlowDialRejected ? new DialRejectedError(e.message) : e;
        }
        const o = this.outage ?? this.outageBegins(e.message);
        count(o);
        const pauses = this.o.retryPausesMs ?? RETRY_PAUSES_MS;
        const pause = pauses[Math.min(o.attempts++, pauses.length - 1)]!;
        if (this.closed || Date.now() + pause > until) throw new DialRejectedError(e.message);
        await new Promise<void>((r) => {
          const wake = () => {
            clearTimeout(timer);
            this.wakeWaiting.delete(wake);
            r();
          };
          const timer = setTimeout(wake, pause);
          this.wakeWaiting.add(wake);
        });
      } finally {
        if (outage) outage.probe = undefined;
        answered();
      }
    }
  }

  private outageBegins(reason: string): Outage {
    const o: Outage = { since: Date.now(), reason, flows: 0, attempts: 0, probe: undefined };
    this.outage = o;
    this.o.log.info('the traffic manager cannot take flows: new connections wait for it', {
      reason,
      upToMs: this.o.managerGapMs ?? MANAGER_GAP_MS,
    });
    return o;
  }

  /** The manager answered a dial (either way): an outage is over. */
  private managerAnswered(): void {
    const o = this.outage;
    if (!o) return;
    this.outage = undefined;
    this.o.log.info('the traffic manager takes flows again', {
      afterMs: Date.now() - o.since,
      flowsThatWaited: o.flows,
    });
  }

  /** One attempt: on a flow connection when the manager takes them, else (or failing that) a Tunnel call. */
  private async dialOnce(id: FlowId): Promise<TcpDial> {
    const flows = this.o.flowConnections;
    if (flows?.enabled()) {
      const dial = await this.dialOnFlowConnection(
        id,
        flows.pool,
        flows.credential(),
        flows.windows?.() === true,
      );
      if (dial) return dial;
    }
    const info = this.info(id);
    const stream = TunnelStream.open(this.o.client, WORKSTATION_WINDOWS);
    await openFlow(stream, info);
    return this.established(id, stream, info);
  }

  /**
   * The flow on a flow connection; undefined when it should go as a Tunnel call instead: no flow connection
   * could be had, or the manager is stopping (the gRPC channel finds the next one; the pool's connections
   * still lead to this one). A connection that breaks before the answer is replaced once; when the new one
   * breaks too, the manager is unavailable (FlowDialRejected.gone) and dialTcp waits for it.
   */
  private async dialOnFlowConnection(
    id: FlowId,
    pool: FlowConnectionPool<Duplex>,
    credential: string,
    peerTakesWindows: boolean,
  ): Promise<TcpDial | undefined> {
    const info = { ...this.info(id), credential };
    const onCall = (why: string) => {
      this.o.log.debug('the flow goes as a Tunnel call', { to: `${id.dstIp}:${id.dstPort}`, why });
      return undefined;
    };
    let connection: Duplex;
    let waited: boolean;
    try {
      ({ connection, waited } = await pool.open());
    } catch (e) {
      return onCall(`no flow connection: ${(e as Error).message}`);
    }
    for (;;) {
      const stream = pool.flowStream(connection, pool.what, peerTakesWindows);
      try {
        await openFlow(stream, info);
        return this.established(id, stream, info);
      } catch (e) {
        // The connection itself failed or ended before the answer. Not a refusal (DIAL_REJECT, which the
        // manager follows with the flow's end) nor a timeout: those are answers, and a Tunnel call would
        // only dial a refused destination again, or carry the same unknown session.
        const broke = e instanceof FlowDialRejected && e.gone;
        // A connection that waited in the pool may have been closed by the far side a moment ago (the
        // manager restarted, the port-forward ended): once more on a new one.
        if (broke && waited) {
          this.o.log.debug('a ready flow connection was gone: opening a new one', {
            reason: (e as Error).message,
          });
          try {
            connection = await pool.fresh();
          } catch (e) {
            return onCall(`no flow connection: ${(e as Error).message}`);
          }
          waited = false;
          continue;
        }
        // A new connection broke too: the way to the manager is broken (the port-forward cut, the manager
        // gone). Waited out like any outage (dialTcp retries); a Tunnel call would take the same way and
        // wait for its channel to connect (seconds, in a fault run: 5 s, and then the flow was refused).
        if (broke) throw e;
        if (e instanceof FlowDialRejected && e.message.includes(MANAGER_SHUTTING_DOWN))
          return onCall(e.message);
        throw e;
      }
    }
  }

  private established(id: FlowId, stream: TunnelStream, info: StreamInfo): TcpDial {
    const log = this.o.log;
    return {
      attach(socket: net.Socket) {
        const reads = readSwitchOf(socket);
        void originate(socket, stream, info, { log, dialed: true, reads }).then((outcome) => {
          if (outcome.kind === 'reset' && outcome.by === 'peer')
            log.debug('flow reset by the cluster side', {
              to: `${id.dstIp}:${id.dstPort}`,
              reason: outcome.reason,
            });
        });
      },
      abandon(reason: string) {
        stream.send(msg.reset(reason));
        stream.end();
      },
    };
  }

  async dialUdp(id: FlowId): Promise<UdpFlow> {
    const info = this.info(id, this.o.udpIdleTimeoutMs ?? DEFAULT_UDP_IDLE_TIMEOUT_MS);
    const stream = TunnelStream.open(this.o.client, WORKSTATION_WINDOWS);
    try {
      const flow = await openUdp(stream, info, { log: this.o.log });
      const out: UdpFlow = {
        send: (d) => {
          flow.send(d);
        },
        onDatagram: undefined,
        onClose: undefined,
        close: () => flow.close(),
      };
      flow.onDatagram = (d) => out.onDatagram?.(d);
      flow.onClose = (reason) => out.onClose?.(reason);
      return out;
    } catch (e) {
      if (e instanceof UdpDialRejected) throw new DialRejectedError(e.message);
      throw e;
    }
  }
}
