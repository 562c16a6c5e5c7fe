// The Manager gRPC service: sessions, snapshots, intercepts and the tunnel, on top of the pure state
// (SessionRegistry, InterceptTable) and a WorkloadSource.
import { status } from '@grpc/grpc-js';
import { lookupInCluster, systemNameservers } from '../dns/cluster-lookup.js';
import type { Upstream } from '../dns/forwarder.js';
import type { Logger } from '../logging/logger.js';
import {
  type AgentInfo,
  AgentInfoSnapshot,
  type ClusterInfo,
  ClusterInfo as ClusterInfoFns,
  InterceptDisposition,
  type InterceptInfo,
  InterceptInfoSnapshot,
  type ManagerServer,
  type WorkloadInfo,
  WorkloadInfoSnapshot,
} from '../rpc/gen/manager.js';
import { grpcError } from '../rpc/unary-call.js';
import { unaryHandlers } from '../rpc/unary-handler.js';
import { TUNNEL_VERSION, VERSION } from '../version/version.js';
import type { ClusterIntegration } from './cluster.js';
import { InterceptError, type InterceptErrorCode, InterceptTable } from './intercepts.js';
import {
  type AgentSession,
  type ClientSession,
  type Session,
  SessionRegistry,
  type SessionTtls,
} from './sessions.js';
import { SnapshotFeeds, WatcherGone } from './snapshot-feeds.js';
import { TunnelRouter } from './tunnel-router.js';
import { AgentWorkloads, type Workload, type WorkloadSource } from './workloads.js';

const errorStatus: Record<InterceptErrorCode, status> = {
  'invalid-argument': status.INVALID_ARGUMENT,
  'not-found': status.NOT_FOUND,
  'already-exists': status.ALREADY_EXISTS,
};

class SessionGone extends Error {}

/** A refusal from the cluster integration (the agent cannot be installed, …): shown to the user as is. */
class ClusterRefusal extends Error {}

/** Runs a cluster integration call; its errors carry reasons for the user (FAILED_PRECONDITION). */
async function refusing<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    throw new ClusterRefusal((e as Error).message ?? String(e));
  }
}

/** The manager's state and the reactions that tie its parts together (a client leaves -> its intercepts go). */
export class ManagerCore {
  readonly sessions: SessionRegistry;
  readonly intercepts = new InterceptTable();
  readonly agents = new AgentWorkloads();
  readonly feeds = new SnapshotFeeds();
  readonly router: TunnelRouter;
  /**
   * Standalone mode: where LookupDNS asks (default: the nameservers of the manager's own resolv.conf,
   * which in a pod are the cluster's DNS). Tests point it at a server of their own.
   */
  dnsServers: () => Upstream[] = () => systemNameservers();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    ttls: SessionTtls,
    readonly workloads: WorkloadSource & Partial<Pick<AgentWorkloads, 'addAgent' | 'removeAgent'>>,
    readonly log: Logger,
    /** The Kubernetes integration (kube/), absent in standalone mode. */
    readonly cluster?: ClusterIntegration,
  ) {
    this.sessions = new SessionRegistry(ttls);
    this.router = new TunnelRouter(this.sessions, this.intercepts, log.child('tunnel'));
    workloads.subscribe(() => this.feeds.changed());
    cluster?.onClusterInfoChange(() => this.feeds.changed());
    const every = Math.max(100, Math.min(1000, Math.floor(Math.min(ttls.clientTtlMs, ttls.agentTtlMs) / 5)));
    this.sweeper = setInterval(() => this.expire(), every);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
    this.router.closeAll();
    this.feeds.closeAll();
  }

  arriveClient(s: ClientSession): void {
    this.log.info('client arrived', { client: s.info.name, session: s.id, version: s.info.version });
    this.feeds.changed();
  }

  arriveAgent(s: AgentSession): void {
    const a = s.info;
    this.log.info('agent arrived', {
      workload: a.name,
      namespace: a.namespace,
      pod: a.podName,
      session: s.id,
    });
    this.workloads.addAgent?.(s.id, a);
    this.feeds.changed();
  }

  /** A session ended (depart or expiry): undo everything it held. */
  ended(s: Session, why: 'departed' | 'expired'): void {
    if (s.kind === 'client') {
      const gone = this.intercepts.removeSession(s.id);
      this.router.sessionGone(s.id);
      this.log.info(`client ${why}`, {
        client: s.info.name,
        session: s.id,
        removedIntercepts: gone.map((i) => i.spec!.name).join(',') || undefined,
      });
    } else {
      const a = s.info;
      this.workloads.removeAgent?.(s.id);
      this.intercepts.podGone(a.name, a.namespace, a.podName);
      this.log.info(`agent ${why}`, {
        workload: a.name,
        namespace: a.namespace,
        pod: a.podName,
        session: s.id,
      });
    }
    this.feeds.changed();
  }

  private expire(): void {
    for (const s of this.sessions.expire()) this.ended(s, 'expired');
  }

  session(id: string): Session {
    const s = this.sessions.get(id);
    if (!s)
      throw new SessionGone(
        `session ${id || '(none)'} is not known to the traffic manager (it expired or the manager restarted): arrive again`,
      );
    return s;
  }

  workloadInfo(w: Workload): WorkloadInfo {
    return {
      name: w.name,
      namespace: w.namespace,
      kind: w.kind,
      agentState: w.agentState,
      agentMessage: w.agentMessage,
      ports: w.ports,
      readyReplicas: w.readyReplicas,
      replicas: w.replicas,
      mechanism: w.mechanism,
      intercepts: this.intercepts.forWorkload(w.name, w.namespace),
      agents: w.agents,
    };
  }

  /** What a session sees in WatchIntercepts: a client its own intercepts, an agent its workload's. */
  interceptsFor(sessionId: string): InterceptInfo[] {
    const s = this.sessions.get(sessionId);
    if (!s) throw new WatcherGone(`session ${sessionId} ended`);
    return s.kind === 'client'
      ? this.intercepts.forClient(s.id)
      : this.intercepts.forWorkload(s.info.name, s.info.namespace);
  }
}

/** The errors the manager's state raises, as the gRPC statuses a caller sees. */
function expectedStatus(e: unknown): status | undefined {
  if (e instanceof SessionGone) return status.NOT_FOUND;
  if (e instanceof InterceptError) return errorStatus[e.code];
  if (e instanceof ClusterRefusal) return status.FAILED_PRECONDITION;
  return undefined;
}

export function managerService(core: ManagerCore): ManagerServer {
  const log = core.log;
  const unary = unaryHandlers(log, expectedStatus);
  const emptyCluster: ClusterInfo = {
    podSubnets: [],
    serviceSubnets: [],
    clusterDomain: 'cluster.local',
    dnsIps: [],
    managerPodIp: '',
    managedNamespaces: [],
  };
  const clientOf = (id: string): ClientSession => {
    const s = core.session(id);
    if (s.kind !== 'client') throw new SessionGone(`session ${id} is an agent's, not a client's`);
    return s;
  };
  const agentOf = (id: string): AgentSession => {
    const s = core.session(id);
    if (s.kind !== 'agent') throw new SessionGone(`session ${id} is a client's, not an agent's`);
    return s;
  };
  const workloadFor = (name: string, namespace: string): Workload => {
    const w = core.workloads.get(name, namespace);
    if (!w) throw new InterceptError('not-found', core.workloads.describeMissing(name, namespace));
    return w;
  };

  return {
    version: unary('Version', () => ({
      name: 'tp-manager',
      version: VERSION,
      tunnelVersion: TUNNEL_VERSION,
    })),

    arriveAsClient: unary('ArriveAsClient', (info) => {
      const s = core.sessions.arriveClient(info);
      core.arriveClient(s);
      return { sessionId: s.id, remainIntervalMs: core.sessions.remainIntervalFor('client') };
    }),

    arriveAsAgent: unary('ArriveAsAgent', (info: AgentInfo) => {
      if (!info.name || !info.podName)
        throw new InterceptError('invalid-argument', 'an agent must name its workload and pod');
      const s = core.sessions.arriveAgent({ ...info, namespace: info.namespace || 'default' });
      core.arriveAgent(s);
      return { sessionId: s.id, remainIntervalMs: core.sessions.remainIntervalFor('agent') };
    }),

    remain: unary('Remain', (req) => {
      const id = req.session?.sessionId ?? '';
      if (!core.sessions.remain(id)) core.session(id); // throws the NOT_FOUND the caller reacts to
      return {};
    }),

    depart: unary('Depart', (req) => {
      const s = core.sessions.depart(req.sessionId);
      if (s) core.ended(s, 'departed');
      return {};
    }),

    watchAgents: (call) => {
      core.feeds.watch(
        call,
        () => {
          if (!core.sessions.get(call.request.sessionId)) throw new WatcherGone('session ended');
          return { agents: core.sessions.agents().map((a) => a.info) };
        },
        (v) => AgentInfoSnapshot.encode(v).finish(),
      );
    },

    watchIntercepts: (call) => {
      if (!core.sessions.get(call.request.sessionId)) {
        call.emit('error', grpcError(status.NOT_FOUND, `session ${call.request.sessionId} is not known`));
        return;
      }
      core.feeds.watch(
        call,
        () => ({ intercepts: core.interceptsFor(call.request.sessionId) }),
        (v) => InterceptInfoSnapshot.encode(v).finish(),
      );
    },

    watchWorkloads: (call) => {
      const sessionId = call.request.session?.sessionId ?? '';
      if (!core.sessions.get(sessionId)) {
        call.emit('error', grpcError(status.NOT_FOUND, `session ${sessionId} is not known`));
        return;
      }
      core.feeds.watch(
        call,
        () => {
          if (!core.sessions.get(sessionId)) throw new WatcherGone('session ended');
          return { workloads: core.workloads.list(call.request.namespace).map((w) => core.workloadInfo(w)) };
        },
        (v) => WorkloadInfoSnapshot.encode(v).finish(),
      );
    },

    watchClusterInfo: (call) => {
      // Standalone mode knows no cluster subnets; the Kubernetes integration fills these in.
      core.feeds.watch(
        call,
        () => core.cluster?.clusterInfo() ?? emptyCluster,
        (v) => ClusterInfoFns.encode(v).finish(),
      );
    },

    ensureAgent: unary('EnsureAgent', async (req) => {
      clientOf(req.session?.sessionId ?? '');
      if (core.cluster)
        return {
          agents: await refusing(() =>
            core.cluster!.ensureAgent(req.name, req.namespace || 'default', req.mechanism),
          ),
        };
      const w = workloadFor(req.name, req.namespace || 'default');
      return { agents: w.agents };
    }),

    prepareIntercept: unary('PrepareIntercept', (req) => {
      const s = clientOf(req.session?.sessionId ?? '');
      const spec = req.spec;
      if (!spec) throw new InterceptError('invalid-argument', 'the intercept spec is missing');
      try {
        const w = workloadFor(spec.workload, spec.namespace || 'default');
        const resolved = core.intercepts.prepare({ sessionId: s.id, clientName: s.info.name }, spec, w);
        return {
          error: '',
          workloadKind: resolved.workloadKind,
          remotePort: resolved.remotePort,
          portName: resolved.portName,
          containerName: '',
          agentImage: '',
        };
      } catch (e) {
        if (!(e instanceof InterceptError)) throw e;
        return {
          error: e.message,
          workloadKind: '',
          remotePort: 0,
          portName: '',
          containerName: '',
          agentImage: '',
        };
      }
    }),

    createIntercept: unary('CreateIntercept', (req) => {
      const s = clientOf(req.session?.sessionId ?? '');
      const spec = req.spec;
      if (!spec) throw new InterceptError('invalid-argument', 'the intercept spec is missing');
      const w = workloadFor(spec.workload, spec.namespace || 'default');
      const info = core.intercepts.create({ sessionId: s.id, clientName: s.info.name }, spec, w);
      log.info('intercept created', {
        intercept: info.spec!.name,
        workload: w.name,
        namespace: w.namespace,
        port: info.spec!.remotePort,
        client: s.info.name,
      });
      core.feeds.changed();
      return info;
    }),

    removeIntercept: unary('RemoveIntercept', (req) => {
      const s = clientOf(req.session?.sessionId ?? '');
      const info = core.intercepts.remove(s.id, req.name);
      log.info('intercept removed', { intercept: info.spec!.name, client: s.info.name });
      core.feeds.changed();
      return {};
    }),

    reviewIntercept: unary('ReviewIntercept', (req) => {
      const s = agentOf(req.session?.sessionId ?? '');
      const info = core.intercepts.review({
        podName: s.info.podName,
        podIp: s.info.podIp,
        interceptId: req.interceptId,
        disposition: req.disposition,
        message: req.message,
        environment: req.environment,
      });
      if (info) {
        log.info('intercept reviewed', {
          intercept: info.spec!.name,
          pod: s.info.podName,
          disposition: InterceptDisposition[info.disposition],
        });
        core.feeds.changed();
      }
      return {};
    }),

    uninstallAgents: unary('UninstallAgents', async (req) => {
      if (core.cluster) {
        clientOf(req.session?.sessionId ?? '');
        const cluster = core.cluster;
        // With all, an empty namespace means every managed namespace.
        const namespace = req.all ? req.namespace : req.namespace || 'default';
        await refusing(() => cluster.uninstallAgents(req.names, namespace, req.all));
        return {};
      }
      throw new InterceptError(
        'invalid-argument',
        'standalone mode does not install agents: stop the tp-agent processes to remove them',
      );
    }),

    lookupDns: unary('LookupDNS', async (req) => {
      core.session(req.session?.sessionId ?? '');
      if (core.cluster) return core.cluster.lookupDns(req.name, req.qtype);
      // A real DNS query, not getaddrinfo: "no AAAA record" stays NOERROR (getaddrinfo would say "not
      // found", and the workstation would then not even ask for A), and SRV, TXT, PTR… come back as the
      // server gave them.
      try {
        return await lookupInCluster(req.name, req.qtype, core.dnsServers());
      } catch (e) {
        log.debug('LookupDNS: no DNS server answered', { name: req.name, error: (e as Error).message });
        return { rcode: 2, ips: [], ttlSeconds: 5, raw: Buffer.alloc(0) };
      }
    }),

    tunnel: (call) => core.router.handle(call),

    watchDial: (call) => {
      const id = call.request.sessionId;
      if (!core.sessions.client(id)) {
        call.emit('error', grpcError(status.NOT_FOUND, `session ${id} is not a known client session`));
        return;
      }
      core.router.addDialStream(id, call);
    },
  };
}
