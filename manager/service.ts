// The Manager gRPC service: sessions, snapshots, intercepts and the tunnel, on top of the pure state
// (SessionRegistry, InterceptTable) and a WorkloadSource.
import { type Metadata, status } from '@grpc/grpc-js';
import { lookupInCluster, systemNameservers } from '../dns/cluster-lookup.js';
import type { Upstream } from '../dns/forwarder.js';
import type { Logger } from '../logging/logger.js';
import { bearerToken } from '../rpc/call-credentials.js';
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
import { AccessControl, AccessDenied, AuthorizationUnavailable } from './access-control.js';
import type { Action, WorkloadRef } from './authorization.js';
import type { ClusterIntegration } from './cluster.js';
import { CredentialAuthority, type Identity } from './credentials.js';
import {
  InterceptError,
  type InterceptErrorCode,
  type InterceptOwner,
  InterceptTable,
} from './intercepts.js';
import {
  type AgentSession,
  type ClientSession,
  DEFAULT_INTERCEPT_GRACE_MS,
  type Session,
  SessionRegistry,
  type SessionTtls,
} from './sessions.js';
import { SnapshotFeeds, WatcherGone } from './snapshot-feeds.js';
import { TunnelRouter } from './tunnel-router.js';
import { WorkloadVisibility } from './workload-visibility.js';
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
  /** Who may call, and what they may do (off in standalone mode). */
  readonly access: AccessControl;
  /**
   * Standalone mode: where LookupDNS asks (default: the nameservers of the manager's own resolv.conf,
   * which in a pod are the cluster's DNS). Tests point it at a server of their own.
   */
  dnsServers: () => Upstream[] = () => systemNameservers();
  private readonly sweeper: NodeJS.Timeout;
  private readonly interceptGraceMs: number;

  constructor(
    ttls: SessionTtls,
    readonly workloads: WorkloadSource & Partial<Pick<AgentWorkloads, 'addAgent' | 'removeAgent'>>,
    readonly log: Logger,
    /** The Kubernetes integration (kube/), absent in standalone mode. */
    readonly cluster?: ClusterIntegration,
    access?: AccessControl,
  ) {
    this.sessions = new SessionRegistry(ttls);
    this.interceptGraceMs = ttls.interceptGraceMs ?? DEFAULT_INTERCEPT_GRACE_MS;
    this.access =
      access ??
      new AccessControl({ mode: 'off', credentials: new CredentialAuthority(), log: log.child('access') });
    this.router = new TunnelRouter(
      this.sessions,
      this.intercepts,
      log.child('tunnel'),
      (session, info, metadata) =>
        this.access.tunnelRefusal(session, bearerToken(metadata) || info.credential, {
          dstIp: info.connId?.dstIp ?? '',
          outbound: !info.relayId && !info.interceptId,
          label: info.connId ? `${info.connId.dstIp}:${info.connId.dstPort}` : '',
        }),
      { dialStreamLost: (sessionId) => this.lost(sessionId) },
    );
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

  /**
   * Shutdown, first step: every session is told to go (its watches and dial stream end: agents pass
   * connections to their apps and clients look for the next manager), no new flow starts, and the flows
   * in progress go on. stop() ends what is left.
   */
  drain(): void {
    clearInterval(this.sweeper);
    this.router.drain();
    this.feeds.closeAll();
  }

  /** `resumes`: the session (of this manager or of the one before) whose resume token it arrived with. */
  arriveClient(s: ClientSession, resumes?: string): void {
    this.log.info('client arrived', {
      client: s.info.name,
      user: s.identity?.user,
      session: s.id,
      version: s.info.version,
      ...(resumes === undefined ? {} : { resumes }),
    });
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

  /**
   * A session ended: undo everything it held. A client that departs takes its intercepts with it; one
   * that is lost (its dial stream closed) or expired leaves them held for the grace period, taking no
   * traffic, so that the same user on the same workstation can take them back (intercepts.ts).
   */
  ended(s: Session, why: 'departed' | 'expired' | 'lost'): void {
    if (s.kind === 'client') {
      this.router.sessionGone(s.id);
      if (why === 'departed') {
        const gone = this.intercepts.removeSession(s.id);
        this.log.info('client departed', {
          client: s.info.name,
          session: s.id,
          removedIntercepts: gone.map((i) => i.spec!.name).join(',') || undefined,
        });
      } else {
        const held = this.intercepts.holdSession(s.id, Date.now() + this.interceptGraceMs);
        this.log.info(`client ${why}`, {
          client: s.info.name,
          session: s.id,
          heldIntercepts: held.map((i) => i.spec!.name).join(',') || undefined,
          heldForMs: held.length > 0 ? this.interceptGraceMs : undefined,
        });
      }
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

  /** A client's dial stream closed: the workstation is gone, its session ends now. */
  private lost(sessionId: string): void {
    const s = this.sessions.lose(sessionId);
    if (s) this.ended(s, 'lost');
  }

  private expire(): void {
    for (const s of this.sessions.expire()) this.ended(s, 'expired');
    const gone = this.intercepts.expireHeld();
    for (const i of gone)
      this.log.info('held intercept removed: its client did not come back', {
        intercept: i.spec!.name,
        client: i.spec!.client,
      });
    if (gone.length > 0) this.feeds.changed();
  }

  /** The owner of a client's new intercepts: its authenticated user and install id may take them back. */
  interceptOwner(s: ClientSession): InterceptOwner {
    return {
      sessionId: s.id,
      clientName: s.info.name,
      reclaimKey: { user: s.identity?.user ?? s.info.name, installId: s.info.installId },
    };
  }

  /** `workstation`: a client session lost lately counts too (SessionRegistry.forWorkstation). */
  session(id: string, workstation = false): Session {
    const s = workstation ? this.sessions.forWorkstation(id) : this.sessions.get(id);
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

  /** The session a call names, which must carry its credential (AccessDenied otherwise, in enforcing mode). */
  callerSession(metadata: Metadata | undefined, id: string, call: string, workstation = false): Session {
    const s = this.session(id, workstation);
    this.access.session(metadata, s, call);
    return s;
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
  if (e instanceof AccessDenied)
    return e.code === 'unauthenticated' ? status.UNAUTHENTICATED : status.PERMISSION_DENIED;
  if (e instanceof AuthorizationUnavailable) return status.UNAVAILABLE;
  return undefined;
}

export function managerService(core: ManagerCore): ManagerServer {
  const log = core.log;
  const unary = unaryHandlers(log, expectedStatus);
  const emptyCluster: Omit<ClusterInfo, 'flowConnections' | 'flowWindows'> = {
    podSubnets: [],
    serviceSubnets: [],
    clusterDomain: 'cluster.local',
    dnsIps: [],
    managerPodIp: '',
    managedNamespaces: [],
  };
  /** The client session a call names; the call must carry its credential. */
  const clientOf = (metadata: Metadata, id: string, call: string): ClientSession => {
    const s = core.callerSession(metadata, id, call);
    if (s.kind !== 'client') throw new SessionGone(`session ${id} is an agent's, not a client's`);
    return s;
  };
  const agentOf = (metadata: Metadata, id: string, call: string): AgentSession => {
    const s = core.callerSession(metadata, id, call);
    if (s.kind !== 'agent') throw new SessionGone(`session ${id} is a client's, not an agent's`);
    return s;
  };
  /** For a stream: the caller's session, or undefined after ending the stream with the error. */
  const streamSession = (
    call: { metadata: Metadata; emit(event: 'error', e: unknown): boolean },
    id: string,
    name: string,
    client = false,
  ): Session | undefined => {
    try {
      return client ? clientOf(call.metadata, id, name) : core.callerSession(call.metadata, id, name);
    } catch (e) {
      const code = expectedStatus(e);
      call.emit(
        'error',
        grpcError(
          code ?? status.INTERNAL,
          code === status.NOT_FOUND ? `session ${id} is not known` : (e as Error).message,
        ),
      );
      return undefined;
    }
  };
  /** The workload an action names, for authorization: its kind, or Deployment when it does not exist. */
  const workloadRef = (name: string, namespace: string): WorkloadRef => ({
    name,
    namespace,
    kind: core.workloads.get(name, namespace)?.kind ?? 'Deployment',
  });
  const authorize = (s: ClientSession, action: Action, call: string) =>
    core.access.authorize(s, action, call);
  /** Which workloads a client may see (tp list, the agents' list): asked per namespace and kind. */
  const visibility = (s: ClientSession, namespace: string) => {
    const v = new WorkloadVisibility(
      (ns, kind) => core.access.may(s, { kind: 'list-workloads', namespace: ns, workloadKind: kind }),
      () => core.feeds.changed(),
    );
    const pairs = core.workloads.list(namespace).map((w) => ({ namespace: w.namespace, kind: w.kind }));
    return { v, ready: core.access.mode === 'off' ? Promise.resolve() : v.prefetch(pairs) };
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

    arriveAsClient: unary('ArriveAsClient', (info, call) => {
      const { identity, resumes } = core.access.clientArrival(call.metadata);
      const s = core.sessions.arriveClient({ ...info, name: clientLabel(info.name, identity) }, identity);
      core.arriveClient(s, resumes);
      return {
        sessionId: s.id,
        remainIntervalMs: core.sessions.remainIntervalFor('client'),
        credential: core.access.credentials.sessionCredential(s.id),
        resumeToken: core.access.resumeToken(s),
        tunnelVersion: TUNNEL_VERSION,
      };
    }),

    arriveAsAgent: unary('ArriveAsAgent', async (info: AgentInfo, call) => {
      if (!info.name || !info.podName)
        throw new InterceptError('invalid-argument', 'an agent must name its workload and pod');
      const claim = { ...info, namespace: info.namespace || 'default' };
      const identity = await core.access.agentArrival(call.metadata, claim);
      const s = core.sessions.arriveAgent(claim, identity);
      core.arriveAgent(s);
      return {
        sessionId: s.id,
        remainIntervalMs: core.sessions.remainIntervalFor('agent'),
        credential: core.access.credentials.sessionCredential(s.id),
        resumeToken: '',
        tunnelVersion: TUNNEL_VERSION,
      };
    }),

    remain: unary('Remain', (req, call) => {
      const id = req.session?.sessionId ?? '';
      core.callerSession(call.metadata, id, 'Remain'); // NOT_FOUND makes the caller arrive again
      core.sessions.remain(id);
      const client = core.sessions.client(id);
      return { resumeToken: client ? core.access.resumeToken(client) : '' };
    }),

    depart: unary('Depart', (req, call) => {
      if (!core.sessions.get(req.sessionId)) return {};
      core.callerSession(call.metadata, req.sessionId, 'Depart');
      const s = core.sessions.depart(req.sessionId);
      if (s) core.ended(s, 'departed');
      return {};
    }),

    watchAgents: (call) => {
      const s = streamSession(call, call.request.sessionId, 'WatchAgents', true) as ClientSession | undefined;
      if (!s) return;
      const { v, ready } = visibility(s, '');
      call.on('close', () => v.close());
      void ready.then(() =>
        core.feeds.watch(
          call,
          () => {
            if (!core.sessions.get(s.id)) throw new WatcherGone('session ended');
            const agents = core.sessions.agents().map((a) => a.info);
            return {
              agents:
                core.access.mode === 'off' ? agents : agents.filter((a) => v.visible(a.namespace, a.kind)),
            };
          },
          (x) => AgentInfoSnapshot.encode(x).finish(),
        ),
      );
    },

    watchIntercepts: (call) => {
      if (!streamSession(call, call.request.sessionId, 'WatchIntercepts')) return;
      core.feeds.watch(
        call,
        () => ({ intercepts: core.interceptsFor(call.request.sessionId) }),
        (v) => InterceptInfoSnapshot.encode(v).finish(),
      );
    },

    watchWorkloads: (call) => {
      const sessionId = call.request.session?.sessionId ?? '';
      const s = streamSession(call, sessionId, 'WatchWorkloads', true) as ClientSession | undefined;
      if (!s) return;
      const { v, ready } = visibility(s, call.request.namespace);
      call.on('close', () => v.close());
      void ready.then(() =>
        core.feeds.watch(
          call,
          () => {
            if (!core.sessions.get(sessionId)) throw new WatcherGone('session ended');
            const list = core.workloads.list(call.request.namespace);
            const seen =
              core.access.mode === 'off' ? list : list.filter((w) => v.visible(w.namespace, w.kind));
            return { workloads: seen.map((w) => core.workloadInfo(w)) };
          },
          (x) => WorkloadInfoSnapshot.encode(x).finish(),
        ),
      );
    },

    watchClusterInfo: (call) => {
      if (!streamSession(call, call.request.sessionId, 'WatchClusterInfo')) return;
      // Standalone mode knows no cluster subnets; the Kubernetes integration fills these in.
      core.feeds.watch(
        call,
        // The manager's port takes flow connections (server.ts): the root daemon's VIF opens its flows there.
        (): ClusterInfo => ({
          ...(core.cluster?.clusterInfo() ?? emptyCluster),
          flowConnections: true,
          flowWindows: true,
        }),
        (v) => ClusterInfoFns.encode(v).finish(),
      );
    },

    ensureAgent: unary('EnsureAgent', async (req, call) => {
      const s = clientOf(call.metadata, req.session?.sessionId ?? '', 'EnsureAgent');
      await authorize(
        s,
        { kind: 'install-agent', workload: workloadRef(req.name, req.namespace || 'default') },
        'EnsureAgent',
      );
      if (core.cluster)
        return {
          agents: await refusing(() =>
            core.cluster!.ensureAgent(req.name, req.namespace || 'default', req.mechanism),
          ),
        };
      const w = workloadFor(req.name, req.namespace || 'default');
      return { agents: w.agents };
    }),

    prepareIntercept: unary('PrepareIntercept', async (req, call) => {
      const s = clientOf(call.metadata, req.session?.sessionId ?? '', 'PrepareIntercept');
      const spec = req.spec;
      if (!spec) throw new InterceptError('invalid-argument', 'the intercept spec is missing');
      const ref = workloadRef(spec.workload, spec.namespace || 'default');
      await authorize(s, { kind: 'intercept', workload: ref }, 'PrepareIntercept');
      try {
        const w = workloadFor(spec.workload, spec.namespace || 'default');
        const resolved = core.intercepts.prepare(core.interceptOwner(s), spec, w);
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

    createIntercept: unary('CreateIntercept', async (req, call) => {
      const s = clientOf(call.metadata, req.session?.sessionId ?? '', 'CreateIntercept');
      const spec = req.spec;
      if (!spec) throw new InterceptError('invalid-argument', 'the intercept spec is missing');
      const ref = workloadRef(spec.workload, spec.namespace || 'default');
      await authorize(s, { kind: 'intercept', workload: ref }, 'CreateIntercept');
      const w = workloadFor(spec.workload, spec.namespace || 'default');
      const { replaced, ...info } = core.intercepts.create(core.interceptOwner(s), spec, w);
      for (const r of replaced ?? [])
        log.info('intercept taken back by its user from a new session', {
          intercept: r.spec!.name,
          oldSession: r.clientSessionId,
          session: s.id,
          client: s.info.name,
        });
      log.info('intercept created', {
        intercept: info.spec!.name,
        workload: w.name,
        namespace: w.namespace,
        port: info.spec!.remotePort,
        ingest: info.spec!.ingest || undefined,
        container: info.spec!.container || undefined,
        client: s.info.name,
      });
      core.feeds.changed();
      return info;
    }),

    removeIntercept: unary('RemoveIntercept', (req, call) => {
      // Only the session's own intercepts: the table is keyed by session id.
      const s = clientOf(call.metadata, req.session?.sessionId ?? '', 'RemoveIntercept');
      const info = core.intercepts.remove(s.id, req.name);
      log.info('intercept removed', { intercept: info.spec!.name, client: s.info.name });
      core.feeds.changed();
      return {};
    }),

    revokeIntercepts: unary('RevokeIntercepts', async (req, call) => {
      const s = clientOf(call.metadata, req.session?.sessionId ?? '', 'RevokeIntercepts');
      const namespace = req.namespace || 'default';
      await authorize(
        s,
        { kind: 'revoke-intercepts', workload: workloadRef(req.workload, namespace) },
        'RevokeIntercepts',
      );
      const gone = core.intercepts.revoke(req.workload, namespace, req.remotePort);
      for (const i of gone)
        log.info('intercept revoked', {
          intercept: i.spec!.name,
          workload: req.workload,
          namespace,
          port: i.spec!.remotePort,
          holder: i.spec!.client,
          by: s.info.name,
        });
      if (gone.length > 0) core.feeds.changed();
      return { intercepts: gone };
    }),

    reviewIntercept: unary('ReviewIntercept', (req, call) => {
      const s = agentOf(call.metadata, req.session?.sessionId ?? '', 'ReviewIntercept');
      const target = core.intercepts.get(req.interceptId)?.spec;
      if (target && (target.workload !== s.info.name || target.namespace !== s.info.namespace))
        core.access.refuse(
          'permission-denied',
          `the agent of ${s.info.namespace}/${s.info.name} cannot review intercept ${req.interceptId} of ${target.namespace}/${target.workload}`,
          { call: 'ReviewIntercept', pod: s.info.podName },
        );
      const info = core.intercepts.review({
        podName: s.info.podName,
        podIp: s.info.podIp,
        interceptId: req.interceptId,
        disposition: req.disposition,
        message: req.message,
        environment: req.environment,
        container: req.container,
        directPort: s.info.directPort,
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

    reportAgentCounters: unary('ReportAgentCounters', (req, call) => {
      const s = agentOf(call.metadata, req.session?.sessionId ?? '', 'ReportAgentCounters');
      // Shown with the agent in the next snapshot (tp list, tp describe) and in the metrics; not a change
      // worth pushing to every watcher on its own.
      s.info.counters = req.counters ? { ...req.counters, reportedUnixMs: Date.now() } : undefined;
      return {};
    }),

    uninstallAgents: unary('UninstallAgents', async (req, call) => {
      if (core.cluster) {
        const s = clientOf(call.metadata, req.session?.sessionId ?? '', 'UninstallAgents');
        const cluster = core.cluster;
        // With all, an empty namespace means every managed namespace.
        const namespace = req.all ? req.namespace : req.namespace || 'default';
        if (req.all) await authorize(s, { kind: 'uninstall-all-agents', namespace }, 'UninstallAgents');
        else
          for (const name of req.names)
            await authorize(
              s,
              { kind: 'uninstall-agent', workload: workloadRef(name, namespace) },
              'UninstallAgents',
            );
        await refusing(() => cluster.uninstallAgents(req.names, namespace, req.all));
        return {};
      }
      throw new InterceptError(
        'invalid-argument',
        'standalone mode does not install agents: stop the tp-agent processes to remove them',
      );
    }),

    lookupDns: unary('LookupDNS', async (req, call) => {
      // The VIF's lookups are taken for a client session lost lately (its root daemon waits for a new user
      // daemon meanwhile).
      core.callerSession(call.metadata, req.session?.sessionId ?? '', 'LookupDNS', true);
      // A real DNS query, not getaddrinfo: "no AAAA record" stays NOERROR (getaddrinfo would say "not
      // found", and the workstation would then not even ask for A), and SRV, TXT, PTR… come back as the
      // server gave them.
      try {
        return await lookupInCluster(req.name, req.qtype, core.cluster?.dnsServers() ?? core.dnsServers());
      } catch (e) {
        log.debug('LookupDNS: no DNS server answered', { name: req.name, error: (e as Error).message });
        return { rcode: 2, ips: [], ttlSeconds: 5, raw: Buffer.alloc(0) };
      }
    }),

    tunnel: (call) => core.router.handle(call),

    watchDial: (call) => {
      const id = call.request.sessionId;
      const agent = core.sessions.agent(id) !== undefined;
      if (!core.sessions.client(id) && !agent) {
        call.emit('error', grpcError(status.NOT_FOUND, `session ${id} is not a known session`));
        return;
      }
      // The intercepted connections of a session go to whoever holds its credential, no one else; an
      // agent's (mount requests) likewise.
      if (!streamSession(call, id, 'WatchDial', !agent)) return;
      core.router.addDialStream(id, call);
    },
  };
}

/**
 * How a client session is named to others ("already intercepted by alice@laptop"): the Kubernetes user
 * the cluster authenticated, at the host the client names; the client's own user@host when unauthenticated.
 */
export function clientLabel(claimed: string, identity: Identity | undefined): string {
  if (!identity) return claimed;
  const host = claimed.includes('@') ? claimed.slice(claimed.lastIndexOf('@') + 1) : claimed;
  return host ? `${identity.user}@${host}` : identity.user;
}
