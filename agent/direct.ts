// Direct intercepted connections: the agent's own gRPC service (rpc/manager.proto, service Agent) on
// 127.0.0.1 in the pod. The client that owns an intercept reaches it through a port-forward to the pod
// (Telepresence's agentPortForward) and watches for dials there; the pod's intercepted connections then go
// agent -> port-forward -> workstation, without the traffic manager's relay in between (one process and
// one network hop fewer on every round trip). The manager stays the authority: it makes each intercept's
// direct_token and sends it only to the owning client and to the workload's agents, and an agent takes
// direct watches only for the intercepts it accepted in its current session, so a lost session, a removed
// or revoked intercept ends them.
//
//   client                                  agent
//   WatchDial{session, intercept, token} ─▶ checked against the accepted intercept; kept
//                                           a connection for that intercept arrives
//   ◀─ DialRequest{relay_id, conn, target}
//   Tunnel: OPEN{relay_id, version} ──────▶ paired with the waiting connection (readOpen)
//   ◀─ early DATA …  DIAL_OK ─▶  DATA ⇄ DATA  (tunnel/flow.ts, as through the manager)
//
// The port takes two kinds of connection, told apart by their first bytes: HTTP/2 (the gRPC service: the
// watch, and Tunnel calls) and tunnel/framed-call.ts FLOW_MAGIC, one connection per flow carrying the
// same OPEN and flow messages without HTTP/2. A client that reaches the pod through a port-forward
// opens each flow as a SPDY stream of its own (kube/port-forward.ts PodStreams): the kubelet's side
// connects here once per flow.
//
// A connection whose intercept has no direct watch goes through the manager as before; one whose watch
// does not answer within the workstation dial deadline goes to the app (agent/listeners.ts).
import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../logging/logger.js';
import { sameSecret } from '../rpc/call-credentials.js';
import type { DialRequest, DirectDialWatch, StreamInfo, TunnelMessage } from '../rpc/gen/manager.js';
import { DIRECT_WINDOWS, managerServerOptions } from '../rpc/grpc-options.js';
import { AgentServiceDefinition } from '../rpc/manager-service.js';
import { widenReceiveWindow } from '../rpc/server-window.js';
import { duplicate } from '../sys/descriptor.js';
import { readOpen } from '../tunnel/flow.js';
import {
  type FlowAndGrpcListener,
  listenForFlowsAndGrpc,
  serveFlowConnection,
} from '../tunnel/flow-listener.js';
import { FLOW_OPEN_TIMEOUT_MS } from '../tunnel/flow-pool.js';
import { FLOW_CONNECTIONS_METADATA, FLOW_WINDOWS_METADATA } from '../tunnel/framed-call.js';
import { msg } from '../tunnel/messages.js';
import { TunnelStream } from '../tunnel/stream.js';
import type { DirectIntercept } from './intercept-routes.js';

/** How long a client has to send its Tunnel stream's OPEN. */
const OPEN_TIMEOUT_MS = 5_000;

/** The client's stream for one connection, or why there is none (`timedOut`: the whole wait was spent). */
export type DirectAnswer = { stream: TunnelStream; info: StreamInfo } | { reason: string; timedOut: boolean };

interface Watch {
  sessionId: string;
  call: grpc.ServerWritableStream<DirectDialWatch, DialRequest>;
}

interface Pending {
  interceptId: string;
  sessionId: string;
  /** The watch that asked for the connection's stream. */
  watch: Watch;
  resolve: (answer: DirectAnswer) => void;
}

export class DirectServer {
  private readonly server = new grpc.Server(managerServerOptions());
  /** intercept id -> its client's watch (the latest one). */
  private readonly watches = new Map<string, Watch>();
  /** relay id -> the connection waiting for the client's stream. */
  private readonly pending = new Map<string, Pending>();
  private readonly streams = new Set<TunnelStream>();
  /**
   * Flows on connections of their own, by the watch that asked for them. Nothing on such a connection
   * notices a workstation that vanished (the kubelet's side of it stays up); the watch's gRPC keepalive does.
   */
  private readonly flowConnections = new Map<TunnelStream, Watch>();
  private listener: FlowAndGrpcListener | undefined;
  port = 0;

  constructor(
    /** The intercepts this agent accepted in its current session (AgentManagerSession.direct). */
    private readonly intercepts: () => Map<string, DirectIntercept>,
    private readonly log: Logger,
  ) {
    this.server.addService(AgentServiceDefinition, {
      watchDial: (call: grpc.ServerWritableStream<DirectDialWatch, DialRequest>) => this.watch(call),
      tunnel: (call: grpc.ServerDuplexStream<TunnelMessage, TunnelMessage>) => this.tunnel(call),
    });
  }

  /** Listens on 127.0.0.1:port only: the pod's own loopback, which a port-forward reaches. */
  async listen(port: number): Promise<void> {
    this.listener = await listenForFlowsAndGrpc({
      server: this.server,
      host: '127.0.0.1',
      port,
      log: this.log,
      duplicate,
      onFlowConnection: (socket, peer) => {
        const current: { stream?: TunnelStream } = {};
        socket.once('close', () => {
          if (current.stream) this.flowConnections.delete(current.stream);
        });
        serveFlowConnection(
          socket,
          peer,
          (stream) => {
            current.stream = stream;
            this.accept(stream, true);
          },
          (stream) => this.flowConnections.delete(stream),
        );
      },
    });
    this.port = this.listener.port;
  }

  /** Whether the intercept's client watches here now. */
  has(interceptId: string): boolean {
    return this.watches.has(interceptId);
  }

  /**
   * Asks the intercept's client to open a stream for one connection. Resolves with that stream (its OPEN
   * read) or with why there is none: no watch, the watch ended, or no stream within `timeoutMs`.
   */
  dial(
    interceptId: string,
    request: Pick<DialRequest, 'connId' | 'dialTimeoutMs'>,
    timeoutMs: number,
  ): Promise<DirectAnswer> {
    const watch = this.watches.get(interceptId);
    const target = this.intercepts().get(interceptId);
    if (!watch || !target)
      return Promise.resolve({ reason: 'no direct watch for the intercept', timedOut: false });
    const relayId = crypto.randomUUID();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(relayId))
          resolve({
            reason: `the workstation opened no direct stream within ${timeoutMs} ms`,
            timedOut: true,
          });
      }, timeoutMs);
      this.pending.set(relayId, {
        interceptId,
        sessionId: watch.sessionId,
        watch,
        resolve: (answer) => {
          clearTimeout(timer);
          resolve(answer);
        },
      });
      watch.call.write({
        relayId,
        connId: request.connId,
        interceptId,
        targetHost: target.targetHost,
        targetPort: target.targetPort,
        dialTimeoutMs: request.dialTimeoutMs,
        mount: false,
        container: '',
        readWrite: false,
      } satisfies DialRequest);
    });
  }

  /** The routes changed: end the watches of intercepts this agent no longer serves (or whose owner changed). */
  routesChanged(): void {
    const accepted = this.intercepts();
    for (const [id, w] of this.watches) {
      const i = accepted.get(id);
      if (!i || i.clientSessionId !== w.sessionId)
        this.endWatch(id, w, 'the intercept is no longer served here');
    }
  }

  close(): void {
    for (const [id, w] of this.watches) this.endWatch(id, w, 'the agent is stopping');
    for (const s of this.streams) s.abort('the agent is stopping');
    this.listener?.close();
    this.server.forceShutdown();
  }

  private endWatch(id: string, w: Watch, reason: string): void {
    this.watches.delete(id);
    for (const [relayId, p] of this.pending)
      if (p.interceptId === id) {
        this.pending.delete(relayId);
        p.resolve({ reason: `the direct watch ended: ${reason}`, timedOut: false });
      }
    w.call.end();
  }

  private watch(call: grpc.ServerWritableStream<DirectDialWatch, DialRequest>): void {
    const { sessionId, interceptId, token } = call.request;
    const i = this.intercepts().get(interceptId);
    if (!i || i.clientSessionId !== sessionId || !sameSecret(token, i.token)) {
      this.log.info('refused a direct watch', { intercept: interceptId, session: sessionId });
      call.emit('error', {
        code: grpc.status.PERMISSION_DENIED,
        details: `intercept ${interceptId} is not one this agent serves for session ${sessionId}`,
      });
      return;
    }
    const previous = this.watches.get(interceptId);
    if (previous) this.endWatch(interceptId, previous, 'replaced by a newer watch');
    const w: Watch = { sessionId, call };
    this.watches.set(interceptId, w);
    // Headers now: the client learns at once that the watch is admitted (not at the first connection), and
    // that this port takes flow connections.
    const md = new grpc.Metadata();
    md.set(FLOW_CONNECTIONS_METADATA, '1');
    md.set(FLOW_WINDOWS_METADATA, '1');
    call.sendMetadata(md);
    this.log.info('the intercepting client receives connections directly', { intercept: interceptId });
    const dropped = () => {
      if (this.watches.get(interceptId) !== w) return;
      this.log.info('direct watch ended: connections go through the traffic manager', {
        intercept: interceptId,
      });
      this.endWatch(interceptId, w, 'the client went away');
    };
    // The client went away (its connection died, or it cancelled), also after a newer watch replaced this
    // one: the flows this watch asked for go too, as Tunnel calls went with their HTTP/2 connection. One
    // that has had no byte from the workstation yet goes to the app (the replay); the others are reset.
    const gone = () => {
      for (const [s, owner] of this.flowConnections)
        if (owner === w) s.abort('the workstation went away (its direct watch ended)');
      dropped();
    };
    call.on('cancelled', gone);
    call.on('error', gone);
    call.on('close', dropped);
  }

  private tunnel(call: grpc.ServerDuplexStream<TunnelMessage, TunnelMessage>): void {
    // Across a port-forward: a workstation's stream window, an agent's connection window.
    widenReceiveWindow(call as grpc.ServerDuplexStream<unknown, unknown>, DIRECT_WINDOWS);
    this.accept(new TunnelStream(call));
  }

  /** A client's stream for one connection (a Tunnel call or a flow connection): paired by its OPEN. */
  private accept(stream: TunnelStream, flowConnection = false): void {
    this.streams.add(stream);
    const forget = () => this.streams.delete(stream);
    stream.on('peer-end', forget);
    stream.on('failure', forget);
    stream.on('failure', () => this.flowConnections.delete(stream));
    readOpen(stream, flowConnection ? FLOW_OPEN_TIMEOUT_MS : OPEN_TIMEOUT_MS).then(
      (info) => {
        const p = this.pending.get(info.relayId);
        if (!p || p.sessionId !== info.sessionId) {
          stream.dismiss(msg.reset(`relay ${info.relayId} is unknown here or timed out`));
          return;
        }
        this.pending.delete(info.relayId);
        if (flowConnection) this.flowConnections.set(stream, p.watch);
        p.resolve({ stream, info });
      },
      () => stream.dismiss(),
    );
  }
}
