// Routes each Tunnel stream by its OPEN:
//   agent, intercept_id set   -> an intercepted connection: ask the intercepting client to dial (a
//                                DialRequest on its WatchDial stream) and wait for its stream;
//   client, relay_id set      -> that client's answer to a DialRequest: pair it with the waiting agent
//                                stream and relay (an agent's answer to a mount request the same way);
//   client, mount set         -> a remote mount of the client's own intercept or ingest: ask an agent
//                                that accepted it to serve the container's volumes (a DialRequest with
//                                mount set on the agent's WatchDial) and wait for its stream;
//   client, neither set       -> an outbound flow (the root daemon's VIF): the manager dials conn_id.dst
//                                itself, TCP or UDP (conn_id.protocol 17: one datagram per DATA).
// A stream is a Tunnel call or a flow on a flow connection (tunnel/framed-call.ts; the root daemon's TCP
// flows come that way): both are routed alike, a flow connection's OPEN carrying the session's credential.
import * as crypto from 'node:crypto';
import type * as net from 'node:net';
import type { Metadata, ServerDuplexStream, ServerWritableStream } from '@grpc/grpc-js';
import type { Logger } from '../logging/logger.js';
import {
  InterceptDisposition as D,
  type DialRequest,
  type SessionInfo,
  type TunnelMessage,
} from '../rpc/gen/manager.js';
import { AGENT_WINDOWS, WORKSTATION_WINDOWS } from '../rpc/grpc-options.js';
import { widenReceiveWindow } from '../rpc/server-window.js';
import { dialTcp } from '../tunnel/dial.js';
import { readOpen, serveDial } from '../tunnel/flow.js';
import { serveFlowConnection } from '../tunnel/flow-listener.js';
import { FLOW_OPEN_TIMEOUT_MS } from '../tunnel/flow-pool.js';
import {
  EARLY_DATA_VERSION,
  formatConnectionId,
  MANAGER_SHUTTING_DOWN,
  msg,
  type StreamInfo,
  sessionUnknown,
  WORKSTATION_UNAVAILABLE,
} from '../tunnel/messages.js';
import { relay } from '../tunnel/relay.js';
import { TunnelStream } from '../tunnel/stream.js';
import { serveUdp, UDP_PROTOCOL } from '../tunnel/udp-flow.js';
import type { InterceptTable } from './intercepts.js';
import type { Session, SessionRegistry } from './sessions.js';

/**
 * Why a stream of a known session may not open (its credential, where it goes), or undefined. `metadata`:
 * a Tunnel call's; a flow connection has none, its OPEN carries the credential.
 */
export type TunnelAdmission = (
  session: Session,
  info: StreamInfo,
  metadata: Metadata | undefined,
) => string | undefined;

const TCP_PROTOCOL = 6;
/** How long a new Tunnel stream may take to send its OPEN. */
const OPEN_TIMEOUT_MS = 10_000;

/** What the router counted since it started (the manager's metrics read it; manager/metrics.ts). */
export interface TunnelStats {
  /** Flows that got through admission, by kind. */
  flows: { intercept: number; outboundTcp: number; outboundUdp: number };
  /** Streams refused before any dial: unknown session, admission, bad OPEN, intercept gone. */
  refused: number;
  /** Flow connections accepted (tunnel/framed-call.ts: flows without HTTP/2, one after another). */
  flowConnections: number;
  /** Dials that failed: the manager's outbound dials, and workstations' dials of intercepted connections. */
  dialFailures: { intercept: number; outbound: number };
  /** Bytes of ended TCP flows: `toCluster` from the workstation side, `toWorkstation` back. */
  bytes: { toCluster: number; toWorkstation: number };
}

export interface TunnelRouterOptions {
  /**
   * A client's dial stream closed while its session was known: the workstation is gone (a crash, its
   * port-forward closed, keepalives unanswered). The manager declares the session dead at once.
   */
  dialStreamLost?: (sessionId: string) => void;
  /** How long a new stream may take to send its OPEN. */
  openTimeoutMs?: number;
}

interface PendingRelay {
  originator: TunnelStream;
  /** The session that must answer: the intercepting client, or for a mount the serving agent. */
  answererSessionId: string;
  label: string;
  timer: NodeJS.Timeout;
}

export class TunnelRouter {
  private readonly pending = new Map<string, PendingRelay>();
  private readonly dialStreams = new Map<string, ServerWritableStream<SessionInfo, DialRequest>>();
  private readonly flows = new Set<TunnelStream>();
  /** Flow connections, and whether each waits for its next flow's OPEN. */
  private readonly flowConnections = new Map<net.Socket, { idle: boolean }>();
  /** Waiting for no flow connection to carry a flow (flowConnectionsSettled). */
  private readonly settledWaiters: (() => void)[] = [];
  /** Shutting down (drain): flows in progress go on, new ones are refused. */
  private draining = false;
  readonly stats: TunnelStats = {
    flows: { intercept: 0, outboundTcp: 0, outboundUdp: 0 },
    refused: 0,
    flowConnections: 0,
    dialFailures: { intercept: 0, outbound: 0 },
    bytes: { toCluster: 0, toWorkstation: 0 },
  };

  private readonly o: Required<TunnelRouterOptions>;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly intercepts: InterceptTable,
    private readonly log: Logger,
    private readonly admit: TunnelAdmission = () => undefined,
    options: TunnelRouterOptions = {},
  ) {
    this.o = { dialStreamLost: () => {}, openTimeoutMs: OPEN_TIMEOUT_MS, ...options };
  }

  /** Number of tunnel streams open now (for logs and tests). */
  get openStreams(): number {
    return this.flows.size;
  }

  /** A client's WatchDial stream: intercepted connections are announced there (an agent's: mounts). */
  addDialStream(sessionId: string, call: ServerWritableStream<SessionInfo, DialRequest>): void {
    const name =
      this.sessions.client(sessionId)?.info.name ?? this.sessions.agent(sessionId)?.info.podName ?? sessionId;
    this.dialStreams.get(sessionId)?.end();
    this.dialStreams.set(sessionId, call);
    const dropped = () => {
      if (this.dialStreams.get(sessionId) !== call) return;
      this.dialStreams.delete(sessionId);
      if (!this.sessions.client(sessionId)) return;
      this.log.warn('client dial stream dropped: the workstation is gone, its session ends now', {
        client: name,
        session: sessionId,
      });
      this.o.dialStreamLost(sessionId);
    };
    call.on('cancelled', dropped);
    call.on('close', dropped);
    call.on('error', dropped);
  }

  /** The client session ended: close its dial stream and refuse the connections waiting for it. */
  sessionGone(sessionId: string): void {
    const call = this.dialStreams.get(sessionId);
    this.dialStreams.delete(sessionId);
    call?.end();
    for (const [id, p] of this.pending)
      if (p.answererSessionId === sessionId)
        this.refusePending(id, `${WORKSTATION_UNAVAILABLE}the answering session went away`);
  }

  /** A Tunnel call. */
  handle(call: ServerDuplexStream<TunnelMessage, TunnelMessage>): void {
    widenReceiveWindow(call as ServerDuplexStream<unknown, unknown>, AGENT_WINDOWS);
    this.accept(new TunnelStream(call), call);
  }

  /**
   * A flow connection (server.ts tells it apart on the manager's port): its flows, one after another, are
   * routed as Tunnel calls are; their OPEN carries the session's credential.
   */
  handleFlowConnection(socket: net.Socket, peer: string): void {
    this.stats.flowConnections++;
    const state = { idle: true };
    this.flowConnections.set(socket, state);
    socket.once('close', () => {
      this.flowConnections.delete(socket);
      this.checkSettled();
    });
    serveFlowConnection(socket, peer, (stream) => {
      // Between flows while draining: closed, so that the client opens its next flow at the next manager.
      if (this.draining) {
        socket.destroy();
        return;
      }
      state.idle = true;
      this.checkSettled();
      this.accept(stream, undefined, () => {
        state.idle = false;
      });
    });
  }

  /**
   * Resolves once no flow connection carries a flow: what a draining manager waits for besides its gRPC
   * calls (a flow connection's flows are none of those).
   */
  flowConnectionsSettled(): Promise<void> {
    return new Promise((resolve) => {
      this.settledWaiters.push(resolve);
      this.checkSettled();
    });
  }

  private checkSettled(): void {
    if (this.settledWaiters.length === 0) return;
    for (const s of this.flowConnections.values()) if (!s.idle) return;
    for (const resolve of this.settledWaiters.splice(0)) resolve();
  }

  private accept(
    stream: TunnelStream,
    call?: ServerDuplexStream<TunnelMessage, TunnelMessage>,
    opened?: () => void,
  ): void {
    this.flows.add(stream);
    const forget = () => this.flows.delete(stream);
    stream.on('peer-end', forget);
    stream.on('failure', forget);
    readOpen(stream, call ? this.o.openTimeoutMs : FLOW_OPEN_TIMEOUT_MS).then(
      (info) => {
        opened?.();
        this.route(stream, info, call);
      },
      (e: Error) => {
        this.log.debug('tunnel stream without a valid OPEN', { peer: stream.peer, reason: e.message });
        // The peer ended or cancelled it before any OPEN: end this side too, or the call stays half open.
        stream.dismiss();
      },
    );
  }

  private route(
    stream: TunnelStream,
    info: StreamInfo,
    call: ServerDuplexStream<TunnelMessage, TunnelMessage> | undefined,
  ): void {
    const label = formatConnectionId(info.connId);
    if (this.draining) {
      this.refuse(
        stream,
        `${info.interceptId ? WORKSTATION_UNAVAILABLE : ''}${MANAGER_SHUTTING_DOWN}`,
        label,
      );
      return;
    }
    // A workstation's own flow is taken for a client session lost lately (its root daemon waits for a new
    // user daemon meanwhile); an intercepted connection (interceptId) needs a live one.
    const session = info.interceptId
      ? this.sessions.get(info.sessionId)
      : this.sessions.forWorkstation(info.sessionId);
    if (!session) {
      // An agent's intercepted connection then goes to the app (the agent re-arrives meanwhile).
      this.refuse(
        stream,
        `${info.interceptId ? WORKSTATION_UNAVAILABLE : ''}${sessionUnknown(info.sessionId)}`,
        label,
      );
      return;
    }
    const refusal = this.admit(session, info, call?.metadata);
    if (refusal) {
      this.refuse(stream, refusal, label);
      return;
    }
    // A workstation's connection carries all of its flows across a network (a port-forward via the API
    // server, a remote cluster): the same windows its own channel has.
    if (session.kind === 'client' && call) {
      widenReceiveWindow(call as ServerDuplexStream<unknown, unknown>, WORKSTATION_WINDOWS);
    }
    if (info.relayId) {
      const p = this.pending.get(info.relayId);
      if (!p || p.answererSessionId !== session.id) {
        stream.dismiss(msg.reset(`relay ${info.relayId} is unknown or timed out`));
        return;
      }
      clearTimeout(p.timer);
      this.pending.delete(info.relayId);
      this.log.debug('relaying intercepted connection', { flow: p.label, client: session.info.name });
      this.stats.flows.intercept++;
      // An intercepted connection whose workstation vanishes before answering can still go to the app.
      const dialerGone = session.kind === 'client' ? WORKSTATION_UNAVAILABLE : undefined;
      const dialerTakesEarlyData = info.version >= EARLY_DATA_VERSION;
      void relay(p.originator, stream, {
        label: p.label,
        log: this.log,
        dialerGone,
        dialerTakesEarlyData,
      }).then((o) => {
        // The agent originates, the workstation dials: to the dialer is toward the workstation.
        if (o.kind === 'rejected') this.stats.dialFailures.intercept++;
        else {
          this.stats.bytes.toWorkstation += o.bytesToDialer;
          this.stats.bytes.toCluster += o.bytesToOriginator;
        }
        this.log.debug('intercepted connection ended', { flow: p.label, outcome: o.kind });
      });
      return;
    }
    if (info.mount) {
      if (session.kind !== 'client') {
        this.refuse(stream, 'only clients open mounts', label);
        return;
      }
      this.requestMount(stream, info, label, session.id);
      return;
    }
    if (info.interceptId) {
      if (session.kind !== 'agent') {
        this.refuse(stream, 'only agents open intercepted connections', label);
        return;
      }
      this.requestDial(stream, info, label, session.info.name, session.info.namespace);
      return;
    }
    if (session.kind !== 'client') {
      this.refuse(stream, 'agents open only intercepted connections', label);
      return;
    }
    const dst = info.connId;
    if (!dst?.dstIp || !dst.dstPort) {
      this.refuse(stream, 'OPEN names no destination', label);
      return;
    }
    if (dst.protocol !== TCP_PROTOCOL && dst.protocol !== UDP_PROTOCOL && dst.protocol !== 0) {
      this.refuse(
        stream,
        `IP protocol ${dst.protocol} is not carried by the tunnel (TCP and UDP only)`,
        label,
      );
      return;
    }
    if (dst.protocol === UDP_PROTOCOL) {
      this.stats.flows.outboundUdp++;
      void serveUdp(stream, info, { log: this.log }).then((o) =>
        this.log.debug('outbound UDP flow ended', { flow: label, outcome: o.kind }),
      );
      return;
    }
    this.stats.flows.outboundTcp++;
    void serveDial(
      stream,
      info,
      (signal, onread) => dialTcp(dst.dstIp, dst.dstPort, info.dialTimeoutMs, signal, onread),
      { log: this.log },
    ).then((o) => {
      if (o.kind === 'rejected') this.stats.dialFailures.outbound++;
      else {
        // The manager's socket reads the destination's bytes (in) and writes the workstation's (out).
        this.stats.bytes.toWorkstation += o.bytesIn;
        this.stats.bytes.toCluster += o.bytesOut;
      }
      this.log.debug('outbound flow ended', { flow: label, outcome: o.kind });
    });
  }

  private requestDial(
    stream: TunnelStream,
    info: StreamInfo,
    label: string,
    workload: string,
    namespace: string,
  ): void {
    const intercept = this.intercepts.get(info.interceptId);
    if (!intercept || intercept.spec!.workload !== workload || intercept.spec!.namespace !== namespace) {
      this.refuse(stream, `${WORKSTATION_UNAVAILABLE}intercept ${info.interceptId} is gone`, label);
      return;
    }
    const client = this.sessions.client(intercept.clientSessionId);
    const dialStream = this.dialStreams.get(intercept.clientSessionId);
    if (!client || !dialStream) {
      this.refuse(
        stream,
        `${WORKSTATION_UNAVAILABLE}the intercepting client ${intercept.spec!.client} is not receiving connections (its dial stream is down)`,
        label,
      );
      return;
    }
    this.announce(stream, label, client.id, `client ${client.info.name}`, dialStream, info.dialTimeoutMs, {
      connId: info.connId,
      interceptId: intercept.id,
      targetHost: intercept.spec!.targetHost,
      targetPort: intercept.spec!.targetPort,
      readWrite: false,
      mount: false,
      container: '',
    });
  }

  /**
   * A client's mount: only the session that owns the intercept or ingest (the intercept id alone proves
   * nothing: others see it), once an agent accepted it; that agent serves the container's volumes.
   */
  private requestMount(stream: TunnelStream, info: StreamInfo, label: string, sessionId: string): void {
    const intercept = this.intercepts.get(info.interceptId);
    if (!intercept || intercept.clientSessionId !== sessionId) {
      this.refuse(
        stream,
        `no intercept or ingest ${info.interceptId} of this session: only the session that owns one mounts its volumes`,
        label,
      );
      return;
    }
    const spec = intercept.spec!;
    const accepted = new Set(intercept.pods.filter((p) => p.disposition === D.ACTIVE).map((p) => p.podName));
    const agent = this.sessions
      .agents()
      .find(
        (a) =>
          a.info.name === spec.workload &&
          a.info.namespace === spec.namespace &&
          accepted.has(a.info.podName) &&
          this.dialStreams.has(a.id),
      );
    if (!intercept.container || !agent) {
      this.refuse(
        stream,
        `no agent of ${spec.namespace}/${spec.workload} that accepted "${spec.name}" serves mounts (is it active, and is the agent as new as the manager?)`,
        label,
      );
      return;
    }
    this.announce(
      stream,
      label,
      agent.id,
      `agent ${agent.info.podName}`,
      this.dialStreams.get(agent.id)!,
      info.dialTimeoutMs,
      {
        connId: info.connId,
        interceptId: intercept.id,
        targetHost: '',
        targetPort: 0,
        mount: true,
        container: intercept.container,
        readWrite: info.mountReadWrite,
      },
    );
  }

  /** Asks `answerer` (on its WatchDial stream) to open the stream that pairs with `stream`. */
  private announce(
    stream: TunnelStream,
    label: string,
    answererId: string,
    answerer: string,
    dialStream: ServerWritableStream<SessionInfo, DialRequest>,
    timeoutMs: number,
    request: Omit<DialRequest, 'relayId' | 'dialTimeoutMs'>,
  ): void {
    const relayId = crypto.randomUUID();
    const timer = setTimeout(
      () =>
        this.refusePending(
          relayId,
          `${WORKSTATION_UNAVAILABLE}${answerer} did not answer within ${timeoutMs} ms`,
        ),
      timeoutMs,
    );
    this.pending.set(relayId, { originator: stream, answererSessionId: answererId, label, timer });
    const cancel = () => {
      const p = this.pending.get(relayId);
      if (p?.originator !== stream) return;
      clearTimeout(p.timer);
      this.pending.delete(relayId);
    };
    stream.once('peer-end', cancel);
    stream.once('failure', cancel);
    dialStream.write({ ...request, relayId, dialTimeoutMs: timeoutMs } satisfies DialRequest);
  }

  private refusePending(relayId: string, reason: string): void {
    const p = this.pending.get(relayId);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(relayId);
    this.refuse(p.originator, reason, p.label);
  }

  private refuse(stream: TunnelStream, reason: string, label: string): void {
    this.stats.refused++;
    this.log.debug('refusing tunnel stream', { flow: label, reason });
    stream.dismiss(msg.dialReject(reason));
  }

  /**
   * Shutdown, first step: no new flows (an agent's intercepted connection then goes to its app, a
   * workstation's is refused), nothing waits for a workstation any more, the dial streams end so that
   * clients look for the next manager; the flows in progress go on until they end or closeAll().
   */
  drain(): void {
    this.draining = true;
    // Flow connections waiting for a flow: closed (their clients drop them); those in a flow, after it.
    for (const [socket, state] of this.flowConnections) if (state.idle) socket.destroy();
    for (const id of [...this.pending.keys()])
      this.refusePending(id, `${WORKSTATION_UNAVAILABLE}${MANAGER_SHUTTING_DOWN}`);
    const dialStreams = [...this.dialStreams.values()];
    this.dialStreams.clear();
    for (const c of dialStreams) c.end();
  }

  /** Shutdown: reset every flow. */
  closeAll(): void {
    for (const id of [...this.pending.keys()])
      this.refusePending(id, `${WORKSTATION_UNAVAILABLE}${MANAGER_SHUTTING_DOWN}`);
    for (const s of this.flows) s.abort(MANAGER_SHUTTING_DOWN);
    for (const c of this.dialStreams.values()) c.end();
    this.dialStreams.clear();
  }
}
