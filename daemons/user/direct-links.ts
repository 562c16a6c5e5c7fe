// Direct intercepted connections, the workstation's side (the agent's: agent/direct.ts). For each pod
// whose agent accepted one of this session's intercepts and has a direct port, the daemon opens a
// port-forward to that port (kube/port-forward-thread.ts) and watches there for the pod's intercepted
// connections, which then reach the workstation without the traffic manager's relay. The watch shows the
// intercept's direct_token, which only this session got from the manager. A watch that fails is opened
// again while the intercept lasts; meanwhile the agent sends its connections through the manager.
//
// Each connection the watch asks for then gets a connection of its own to the agent's port, carrying the
// flow's framed messages (tunnel/framed-call.ts): a port-forward stream, opened and run whole by the
// port-forward thread (kube/port-forward-thread.ts), or TCP to a standalone agent on this machine. An
// agent whose watch does not say it takes them (an older one), or a stream that cannot be opened, gets a
// Tunnel call on the watch's channel instead.
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../../logging/logger.js';
import { formatHostPort } from '../../netaddr/parse.js';
import { InterceptDisposition as D, type DialRequest, type InterceptInfo } from '../../rpc/gen/manager.js';
import { workstationChannelOptions } from '../../rpc/grpc-options.js';
import { AgentClient } from '../../rpc/manager-service.js';
import { errorDetails } from '../../rpc/unary-call.js';
import { dialTarget } from '../../tunnel/flow.js';
import { tcpFlowPool } from '../../tunnel/flow-pool.js';
import {
  FLOW_CONNECTIONS_METADATA,
  FLOW_WINDOWS_METADATA,
  FlowWindowGroup,
} from '../../tunnel/framed-call.js';
import type { StreamInfo } from '../../tunnel/messages.js';

const log = createLogger('connector/direct');
const MIN_RETRY_MS = 500;
const MAX_RETRY_MS = 5_000;

/** An agent's direct port. */
export interface AgentPort {
  namespace: string;
  podName: string;
  podIp: string;
  port: number;
}

/**
 * Carries one intercepted connection on a connection of its own to the agent's direct port (a port-forward
 * stream, or TCP to a standalone agent): resolves once the flow runs, rejects when that connection cannot
 * be opened (the caller then uses a Tunnel call on the watch's channel).
 */
export type FlowOpener = (info: StreamInfo, target: { host: string; port: number }) => Promise<void>;

/** How this daemon reaches one agent's direct port. */
export interface AgentReach {
  /** The watch's channel dials this (a port-forward's local listener). */
  address: string;
  close(): Promise<void>;
  /**
   * How each connection gets a flow connection of its own; without it each is a Tunnel call.
   * `peerTakesWindows`: the agent said its flow connections take WINDOW frames (tunnel/framed-call.ts).
   */
  flow?(info: StreamInfo, target: { host: string; port: number }, peerTakesWindows: boolean): Promise<void>;
  /** The agent said it takes flow connections: get ready for the first (a port-forward, a spare). */
  warm?(): void;
}

/** How to reach a pod's agent; undefined: not directly (its connections go through the manager). */
export type AgentRoute = (pod: AgentPort) => Promise<AgentReach> | undefined;

/** The windows of this daemon's flows to standalone agents (its flows through port-forwards: the thread's). */
const standaloneWindows = new FlowWindowGroup();

/**
 * How this daemon reaches a standalone agent's direct port at host:port (on this machine's loopback): flows
 * on TCP connections of their own, each kept for the agent's next flow.
 */
export function tcpAgentReach(host: string, port: number): AgentReach {
  const pool = tcpFlowPool(host, port, log, standaloneWindows);
  return {
    address: formatHostPort(host, port),
    close: async () => pool.close(),
    flow: async (info, target, peerTakesWindows) => {
      const { connection } = await pool.open();
      const stream = pool.flowStream(connection, formatHostPort(host, port), peerTakesWindows);
      void dialTarget(stream, info, target, log);
    },
    warm: () => pool.warm(),
  };
}

/** What one watch is for: a pod of one of this session's intercepts. */
interface LinkSpec {
  interceptId: string;
  token: string;
  pod: AgentPort;
  /** The intercept's local target, as this daemon asked for it. */
  target: { host: string; port: number };
}

/** One pod's direct watch for one intercept. */
class DirectLink {
  /** How the connections arrive: straight from the agent while the watch is open, else why not. */
  state = 'through the traffic manager (opening a port-forward to the agent)';
  private watching = false;
  private stopped = false;
  private route: AgentReach | undefined;
  /** How a connection gets a flow connection of its own, when the agent's port takes them (its watch said so). */
  private flow: FlowOpener | undefined;
  private client: AgentClient | undefined;
  private call: grpc.ClientReadableStream<DialRequest> | undefined;
  private retryMs = MIN_RETRY_MS;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly o: LinkSpec & {
      sessionId: string;
      reach: AgentRoute;
      dial: (client: AgentClient, req: DialRequest, flow?: FlowOpener) => void;
    },
  ) {
    void this.open();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.call?.cancel();
    this.client?.close();
    void this.route?.close();
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    const { pod, interceptId } = this.o;
    try {
      if (!this.route) {
        const reaching = this.o.reach(pod);
        if (!reaching) {
          // Not to be tried again: this daemon has no way to the pod (a manager reached by address).
          this.state = 'through the traffic manager (no port-forward to the pod from here)';
          return;
        }
        const route = await reaching;
        if (this.stopped) {
          void route.close();
          return;
        }
        this.route = route;
        this.client = new AgentClient(route.address, grpc.credentials.createInsecure(), {
          ...workstationChannelOptions(),
          'grpc.use_local_subchannel_pool': 1,
        });
      }
    } catch (e) {
      this.retry(`cannot reach the agent's direct port: ${(e as Error).message}`);
      return;
    }
    const call = this.client!.watchDial({ sessionId: this.o.sessionId, interceptId, token: this.o.token });
    this.call = call;
    call.on('metadata', (md: grpc.Metadata) => {
      // An agent that does not say it takes flow connections gets each connection as a Tunnel call; one
      // that says it takes WINDOW frames too gets the windows this daemon sets.
      const flows = md.get(FLOW_CONNECTIONS_METADATA)[0] === '1';
      const windows = md.get(FLOW_WINDOWS_METADATA)[0] === '1';
      const route = this.route;
      this.flow = flows && route?.flow ? (info, target) => route.flow!(info, target, windows) : undefined;
      if (this.flow) route?.warm?.();
      this.state = 'straight from the agent (port-forward to the pod)';
      this.watching = true;
      this.retryMs = MIN_RETRY_MS;
      log.info('intercepted connections come straight from the agent', {
        pod: pod.podName,
        intercept: interceptId,
      });
    });
    // Where to dial is this daemon's own intercept target, never what the other end says: whatever answers
    // on the pod's port must not make the workstation connect elsewhere.
    call.on('data', (req: DialRequest) =>
      this.o.dial(
        this.client!,
        {
          ...req,
          interceptId,
          targetHost: this.o.target.host,
          targetPort: this.o.target.port,
          mount: false,
        },
        this.flow,
      ),
    );
    call.on('error', (e) => {
      if (!this.stopped && this.call === call) this.retry(errorDetails(e));
    });
    call.on('end', () => {
      if (!this.stopped && this.call === call) this.retry('the agent ended the watch');
    });
  }

  private retry(reason: string): void {
    if (this.stopped) return;
    if (this.watching)
      log.info('direct watch lost; the agent sends connections through the traffic manager meanwhile', {
        pod: this.o.pod.podName,
        reason,
      });
    else log.debug('direct watch not open', { pod: this.o.pod.podName, reason });
    this.state = `through the traffic manager (${reason})`;
    this.watching = false;
    this.call = undefined;
    this.timer = setTimeout(() => void this.open(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }
}

/** The direct watches of one session, kept in step with its intercepts (sync() after every snapshot). */
export class DirectLinks {
  private readonly links = new Map<string, DirectLink>();

  constructor(
    private readonly sessionId: string,
    private readonly reach: AgentRoute,
    private readonly dial: (client: AgentClient, req: DialRequest, flow?: FlowOpener) => void,
  ) {}

  /** Opens the watches the intercepts call for and stops the others. */
  sync(intercepts: InterceptInfo[]): void {
    const wanted = new Map<string, LinkSpec>();
    for (const i of intercepts) {
      if (i.clientSessionId !== this.sessionId || !i.directToken || !i.spec) continue;
      for (const p of i.pods) {
        if (p.disposition !== D.ACTIVE || !p.directPort) continue;
        wanted.set(`${i.id}/${p.podName}/${i.directToken}`, {
          interceptId: i.id,
          token: i.directToken,
          pod: { namespace: i.spec.namespace, podName: p.podName, podIp: p.podIp, port: p.directPort },
          target: { host: i.spec.targetHost || '127.0.0.1', port: i.spec.targetPort },
        });
      }
    }
    for (const [key, link] of this.links)
      if (!wanted.has(key)) {
        link.stop();
        this.links.delete(key);
      }
    for (const [key, w] of wanted)
      if (!this.links.has(key))
        this.links.set(
          key,
          new DirectLink({ ...w, sessionId: this.sessionId, reach: this.reach, dial: this.dial }),
        );
  }

  /** How the pod's connections of the intercept arrive; undefined: no direct watch is wanted for it. */
  state(interceptId: string, podName: string): string | undefined {
    for (const l of this.links.values())
      if (l.o.interceptId === interceptId && l.o.pod.podName === podName) return l.state;
    return undefined;
  }

  stop(): void {
    for (const l of this.links.values()) l.stop();
    this.links.clear();
  }
}
