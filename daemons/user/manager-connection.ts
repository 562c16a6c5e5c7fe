// The user daemon's session with the traffic manager: arrive, heartbeat, follow this client's intercepts,
// dial the local targets of intercepted connections (WatchDial), and survive the manager going away:
// reconnect with backoff, then re-create the intercepts ("restored") or report each one gone with the
// reason. The state the CLI shows is never silently half-alive: while the manager is unreachable, status
// says so and every intercept says it waits to be restored.
import * as crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../../logging/logger.js';
import { bearerInterceptor, withBearer } from '../../rpc/call-credentials.js';
import {
  type Arrival,
  type ClusterInfo,
  InterceptDisposition as D,
  type DialRequest,
  type InterceptInfo,
  type InterceptInfoSnapshot,
  type InterceptSpec,
  type PreparedIntercept,
  type RemainResponse,
  type SessionInfo,
  type VersionInfo,
  type WorkloadInfoSnapshot,
} from '../../rpc/gen/manager.js';
import { WORKSTATION_WINDOWS, workstationChannelOptions } from '../../rpc/grpc-options.js';
import { type AgentClient, ManagerClient } from '../../rpc/manager-service.js';
import { errorDetails, hasStatus, isServiceError, unary } from '../../rpc/unary-call.js';
import { dialTarget, type FlowOutcome, originate } from '../../tunnel/flow.js';
import { DEFAULT_DIAL_TIMEOUT_MS, formatConnectionId, streamInfo } from '../../tunnel/messages.js';
import { TunnelStream } from '../../tunnel/stream.js';
import { VERSION } from '../../version/version.js';
import { type AgentRoute, DirectLinks, type FlowOpener } from './direct-links.js';

const log = createLogger('connector/session');
const CALL_TIMEOUT_MS = 5_000;
/**
 * The first arrival: a manager that refuses connections fails at once; this only bounds a silent one (and a
 * busy machine, where a fresh daemon's first HTTP/2 handshake can take seconds).
 */
const ARRIVE_TIMEOUT_MS = 20_000;
/**
 * A re-arrival after the session was lost. Short, and each failed one is retried on a fresh channel: an
 * attempt whose connection went out while the path was down waits for the kernel's SYN retransmissions
 * (1, 3, 7, 15 s… apart) or the port-forward's upgrade timeout, and a grpc-js channel makes no other
 * attempt meanwhile. A fresh attempt every few seconds finds a returned path within seconds.
 */
const REARRIVE_TIMEOUT_MS = 4_000;
const MAX_BACKOFF_MS = 1_000;
/**
 * The pause between re-arrivals for the first seconds after a loss: a restarted manager (a deleted pod, a
 * rollout) listens again within seconds, and the root daemon's new connections wait for it (their SYN
 * held), so each pause adds to every one of them. Each failed attempt is cheap (the forward looks the pod
 * up: two reads of the API server). Later, the pauses double up to MAX_BACKOFF_MS.
 */
const QUICK_BACKOFF_MS = 250;
const QUICK_RETRIES_FOR_MS = 5_000;
/** How long installing an agent (Kubernetes: a rollout) may take. */
const ENSURE_AGENT_TIMEOUT_MS = 120_000;
/** How long an intercept may wait for an agent to accept it. */
const ACCEPT_TIMEOUT_MS = 30_000;
/**
 * After a reconnect, how long restoring keeps retrying a workload whose agent has not re-arrived yet
 * (agents reconnect with a backoff of at most 5 s). TP_RESTORE_GRACE_MS overrides it (tests use 1 s).
 */
const RESTORE_GRACE_MS = Number(process.env.TP_RESTORE_GRACE_MS) || 30_000;
/** The answers to a restoring CreateIntercept that mean "not yet" rather than "no". */
const RESTORE_RETRIED = [
  grpc.status.NOT_FOUND,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
];

export type ConnectionState = 'DISCONNECTED' | 'CONNECTED' | 'RECONNECTING';

/** An error for the CLI: a gRPC status and a message that names the problem and the fix. */
export class UserFacingError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

interface InterceptRecord {
  name: string;
  /** As the manager resolved it (remote port filled in): what a restore re-creates. */
  spec: InterceptSpec;
  /** The manager's view in the current session; undefined until (re-)created in it. */
  info: InterceptInfo | undefined;
  /** Seen in a snapshot of the current session (so its absence later means the manager removed it). */
  seen: boolean;
  /** Why it no longer exists at the manager; shown until the user leaves it. */
  gone: string | undefined;
  note: string;
}

interface Session {
  sessionId: string;
  remainIntervalMs: number;
  /** Carried by every call of the session (rpc/call-credentials.ts). */
  credential: string;
  /** Arrival.resume_token: '' when the manager issues none (no authentication, or an older manager). */
  resumeToken: string;
}

/**
 * Where the user daemon gets its proof of identity for arriving: an identity token the manager issues
 * through the Kubernetes API server to the kubeconfig's user (kube/session-token.ts). `onDemand`: only
 * when the manager asks for it (--manager-address: it may be a standalone manager with no Kubernetes).
 */
export interface IdentitySource {
  token(): Promise<string>;
  onDemand: boolean;
}

export function clientName(): string {
  return `${os.userInfo().username}@${os.hostname()}`;
}

export class ManagerConnection extends EventEmitter {
  state: ConnectionState = 'DISCONNECTED';
  address = '';
  sessionId = '';
  managerVersion = '';
  error = '';
  /** The cluster's subnets, DNS domain and namespaces, as the manager's WatchClusterInfo last said. */
  cluster: ClusterInfo | undefined;
  /** Why the manager is unreachable, while RECONNECTING. */
  private lostReason = '';
  /** The last loss of the session: when, why, when it came back, which intercepts were restored. */
  private outage: { lostAt: number; reason: string; backAt?: number; restored: string[] } | undefined;
  private client: ManagerClient | undefined;
  private identity: IdentitySource | undefined;
  /** The current session's credential, which the channel's interceptor adds to every call. */
  private credential = '';
  /**
   * The latest resume token (Arrival, renewed by each heartbeat): after losing the session, arrive again
   * with it rather than with a new identity token, which a restarted manager can issue only once the API
   * server routes the session API to it (seconds after its pod is Ready). Kept until disconnect.
   */
  private resumeToken = '';
  private readonly records = new Map<string, InterceptRecord>();
  private lastSnapshot: InterceptInfo[] = [];
  private stopped = true;
  private endSession: ((reason: string) => void) | undefined;
  private wakeUp: (() => void) | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  /** How to reach an agent's direct port (connect()). */
  private reach: AgentRoute | undefined;
  /** The current session's direct watches. */
  private direct: DirectLinks | undefined;

  /**
   * Arrives at the manager at address and keeps the session until disconnect(). `reach`: how to reach an
   * agent's direct port (a port-forward to its pod): the session's intercepted connections then come
   * straight from the agents (daemons/user/direct-links.ts); without it, all come through the manager.
   */
  async connect(address: string, identity?: IdentitySource, reach?: AgentRoute): Promise<void> {
    if (this.state !== 'DISCONNECTED') {
      if (address === this.address) return;
      throw new UserFacingError(
        grpc.status.FAILED_PRECONDITION,
        `already connected to the traffic manager at ${this.address}: run tp quit first to connect elsewhere`,
      );
    }
    const client = this.newClient(address);
    this.identity = identity;
    let session: Session;
    try {
      session = await this.arrive(client);
    } catch (e) {
      client.close();
      this.identity = undefined;
      if (e instanceof UserFacingError) throw e;
      if (hasStatus(e, grpc.status.UNAUTHENTICATED) || hasStatus(e, grpc.status.PERMISSION_DENIED))
        throw new UserFacingError(
          grpc.status.UNAUTHENTICATED,
          `the traffic manager at ${address} refused the session: ${errorDetails(e)}`,
        );
      throw new UserFacingError(
        grpc.status.UNAVAILABLE,
        `cannot reach the traffic manager at ${address}: ${errorDetails(e)} (is tp-manager running there?)`,
      );
    }
    this.client = client;
    this.address = address;
    this.reach = reach;
    this.stopped = false;
    this.loopDone = this.run(session);
  }

  /** A channel of its own (a local subchannel pool: the global one would hand back a stuck attempt). */
  private newClient(address: string): ManagerClient {
    return new ManagerClient(address, grpc.credentials.createInsecure(), {
      ...workstationChannelOptions(),
      'grpc.use_local_subchannel_pool': 1,
      interceptors: [bearerInterceptor(() => this.credential)],
    });
  }

  /** Departs and forgets everything. */
  async disconnect(): Promise<void> {
    if (this.state === 'DISCONNECTED') return;
    this.stopped = true;
    // Depart while the watches are still open: the manager ends them, nothing looks like a lost stream.
    if (this.sessionId) await this.depart(this.sessionId);
    this.endSession?.('disconnecting');
    this.wakeUp?.();
    await this.loopDone;
    this.client?.close();
    this.client = undefined;
    this.identity = undefined;
    this.credential = '';
    this.resumeToken = '';
    this.state = 'DISCONNECTED';
    this.sessionId = '';
    this.error = '';
    this.cluster = undefined;
    this.records.clear();
    this.outage = undefined;
    log.info('disconnected', { manager: this.address });
  }

  async list(namespace: string): Promise<WorkloadInfoSnapshot> {
    const client = this.requireSession();
    return new Promise((resolve, reject) => {
      const call = client.watchWorkloads(
        { session: { sessionId: this.sessionId, remainIntervalMs: 0 }, namespace },
        { deadline: new Date(Date.now() + CALL_TIMEOUT_MS) },
      );
      call.once('data', (snapshot: WorkloadInfoSnapshot) => {
        resolve(snapshot);
        call.cancel();
      });
      call.on('error', (e) => {
        if (!hasStatus(e, grpc.status.CANCELLED)) reject(this.managerError(e));
      });
    });
  }

  /**
   * Follows the manager's workload snapshots (tp list --watch) until the returned stop is called; onError
   * once when the stream fails (the manager went away, the session ended).
   */
  watchWorkloads(
    namespace: string,
    onSnapshot: (snapshot: WorkloadInfoSnapshot) => void,
    onError: (e: Error) => void,
  ): () => void {
    const client = this.requireSession();
    const call = client.watchWorkloads({ session: this.session(), namespace });
    let stopped = false;
    call.on('data', onSnapshot);
    call.on('error', (e) => {
      if (!stopped) onError(this.managerError(e));
    });
    call.on('end', () => {
      if (!stopped)
        onError(new UserFacingError(grpc.status.UNAVAILABLE, 'the traffic manager ended the watch'));
    });
    return () => {
      stopped = true;
      call.cancel();
    };
  }

  /** Creates an intercept and waits until an agent accepts it (or refuses it, or time runs out). */
  async createIntercept(spec: InterceptSpec, progress: (line: string) => void): Promise<InterceptInfo> {
    const client = this.requireSession();
    const name = spec.name || spec.workload;
    const existing = this.records.get(name);
    if (existing && !existing.gone)
      throw new UserFacingError(
        grpc.status.ALREADY_EXISTS,
        `you already have an intercept named "${name}": tp leave ${name} first, or choose another --name`,
      );
    const kind = spec.ingest ? 'ingest' : 'intercept';
    const remote = spec.remotePort ? `port ${spec.remotePort}` : 'the port';
    progress(
      spec.ingest
        ? `Creating ingest ${name}: ${spec.container ? `container ${spec.container}` : 'the container'} of ${spec.namespace}/${spec.workload}`
        : `Creating intercept ${name}: ${remote} of ${spec.namespace}/${spec.workload} -> ${spec.targetHost || '127.0.0.1'}:${spec.targetPort}`,
    );
    // Refusals that need no agent (unknown workload, a port it does not expose, a conflict) come
    // first, so nothing is rolled out for an intercept that cannot be made.
    let prepared: PreparedIntercept;
    try {
      prepared = await unary<PreparedIntercept>(
        (md, o, cb) =>
          client.prepareIntercept({ session: this.session(), spec: { ...spec, name } }, md, o, cb),
        CALL_TIMEOUT_MS,
      );
    } catch (e) {
      throw this.managerError(e);
    }
    if (prepared.error) throw new UserFacingError(grpc.status.FAILED_PRECONDITION, prepared.error);
    // The manager makes sure the workload has an agent (Kubernetes: injects it and waits for the pods
    // to roll; standalone: the agent must have arrived). Say so only when it takes a while.
    const slow = setTimeout(
      () => progress(`Waiting for an agent in ${spec.namespace}/${spec.workload}`),
      500,
    );
    const stopRolloutProgress = this.reportAgentProgress(spec.workload, spec.namespace, progress);
    try {
      await unary(
        (md, o, cb) =>
          client.ensureAgent(
            { session: this.session(), name: spec.workload, namespace: spec.namespace, mechanism: '' },
            md,
            o,
            cb,
          ),
        ENSURE_AGENT_TIMEOUT_MS,
      );
    } catch (e) {
      throw this.managerError(e);
    } finally {
      clearTimeout(slow);
      stopRolloutProgress();
    }
    let info: InterceptInfo;
    try {
      info = await unary<InterceptInfo>(
        (md, o, cb) =>
          client.createIntercept({ session: this.session(), spec: { ...spec, name } }, md, o, cb),
        CALL_TIMEOUT_MS,
      );
    } catch (e) {
      throw this.managerError(e);
    }
    const record: InterceptRecord = { name, spec: info.spec!, info, seen: false, gone: undefined, note: '' };
    this.records.set(name, record);
    this.applySnapshot(this.lastSnapshot);
    progress(`Waiting for an agent of ${spec.workload} to accept the ${kind}`);
    const settled = await this.waitForAgent(record);
    if (settled.disposition === D.ACTIVE) {
      log.info(`${kind} active`, {
        intercept: name,
        port: info.spec!.remotePort,
        container: settled.container,
      });
      return settled;
    }
    // Refused or no answer: nothing is left behind.
    await this.removeIntercept(name).catch(() => {});
    if (settled.disposition === D.AGENT_ERROR)
      throw new UserFacingError(
        grpc.status.FAILED_PRECONDITION,
        `the agent refused the ${kind}: ${settled.message}`,
      );
    if (settled.disposition === D.REMOVED)
      throw new UserFacingError(
        grpc.status.ABORTED,
        `the ${kind} went away while waiting: ${settled.message}`,
      );
    throw new UserFacingError(
      grpc.status.DEADLINE_EXCEEDED,
      `no agent of ${spec.namespace}/${spec.workload} accepted the ${kind} within ${ACCEPT_TIMEOUT_MS / 1000} s: ` +
        'is its tp-agent running and connected to the traffic manager?',
    );
  }

  /**
   * While the manager installs an agent, shows what the workload's pods are doing ("rolling out: 1 of 2
   * pods run the agent"), from the manager's workload snapshots. Returns the function that stops it.
   */
  private reportAgentProgress(
    workload: string,
    namespace: string,
    progress: (line: string) => void,
  ): () => void {
    const client = this.client;
    if (!client) return () => {};
    let last = '';
    const call = client.watchWorkloads({ session: this.session(), namespace });
    call.on('data', (snapshot: WorkloadInfoSnapshot) => {
      const w = snapshot.workloads.find((x) => x.name === workload && x.namespace === namespace);
      // Only rollout progress: an error from before this rollout is old news, and a new one comes back
      // as EnsureAgent's answer.
      const line = w?.agentState === 'INSTALLING' && w.agentMessage ? `${w.name}: ${w.agentMessage}` : '';
      if (line && line !== last) progress(line);
      last = line || last;
    });
    call.on('error', () => {});
    return () => call.cancel();
  }

  /** Removes the agent from workloads (Kubernetes mode); resolves when the manager saw their pods roll. */
  async uninstallAgents(names: string[], namespace: string, all: boolean): Promise<void> {
    const client = this.requireSession();
    try {
      await unary(
        (md, o, cb) => client.uninstallAgents({ session: this.session(), names, namespace, all }, md, o, cb),
        ENSURE_AGENT_TIMEOUT_MS,
      );
    } catch (e) {
      throw this.managerError(e);
    }
  }

  /** An admin ends other users' intercepts of a workload (one port, or all with 0); answers the ended ones. */
  async revoke(workload: string, namespace: string, remotePort: number): Promise<InterceptInfo[]> {
    const client = this.requireSession();
    try {
      const r = await unary<InterceptInfoSnapshot>(
        (md, o, cb) =>
          client.revokeIntercepts({ session: this.session(), workload, namespace, remotePort }, md, o, cb),
        CALL_TIMEOUT_MS,
      );
      return r.intercepts;
    } catch (e) {
      throw this.managerError(e);
    }
  }

  async removeIntercept(name: string): Promise<void> {
    const record = this.records.get(name);
    if (!record)
      throw new UserFacingError(grpc.status.NOT_FOUND, `no intercept named "${name}": see tp status`);
    if (!record.gone && this.state === 'CONNECTED' && this.client && record.info) {
      const client = this.client;
      try {
        await unary(
          (md, o, cb) => client.removeIntercept({ session: this.session(), name }, md, o, cb),
          CALL_TIMEOUT_MS,
        );
      } catch (e) {
        if (!hasStatus(e, grpc.status.NOT_FOUND)) throw this.managerError(e);
      }
    }
    this.records.delete(name);
    this.emit('intercepts');
    log.info('intercept removed', { intercept: name });
  }

  /** The intercepts as the user should see them, including the ones waiting to be restored or gone. */
  intercepts(): InterceptInfo[] {
    return [...this.records.values()].map((r) => {
      const base: InterceptInfo = {
        id: r.info?.id ?? '',
        spec: r.spec,
        clientSessionId: r.info?.clientSessionId ?? '',
        disposition: D.WAITING,
        message: '',
        pods: (r.info?.pods ?? []).map((p) => {
          // An accepted pod says how its connections arrive: straight from its agent, or through the manager.
          const how =
            r.info && p.disposition === D.ACTIVE ? this.direct?.state(r.info.id, p.podName) : undefined;
          return how && !p.message ? { ...p, message: `connections ${how}` } : p;
        }),
        environment: r.info?.environment ?? {},
        createdUnixMs: r.info?.createdUnixMs ?? 0,
        container: r.info?.container ?? '',
        mountPoint: '',
        mountReadWrite: false,
        // The session's secret stays in the daemon.
        directToken: '',
        localMountPort: 0,
      };
      if (r.gone) return { ...base, id: '', pods: [], disposition: D.REMOVED, message: r.gone };
      if (this.state === 'RECONNECTING')
        return {
          ...base,
          pods: [],
          message: 'the traffic manager is unreachable: the intercept is restored when it is back',
        };
      if (!r.info)
        return { ...base, message: 'being restored after the connection to the traffic manager was lost' };
      const message = [r.info.message, r.note].filter(Boolean).join('; ');
      return { ...r.info, pods: base.pods, directToken: '', message };
    });
  }

  /** The cluster info of this session: the last snapshot, or the first one within timeoutMs. */
  waitForCluster(timeoutMs: number): Promise<ClusterInfo | undefined> {
    if (this.cluster) return Promise.resolve(this.cluster);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.off('cluster', done);
        resolve(this.cluster);
      };
      const timer = setTimeout(done, timeoutMs);
      this.on('cluster', done);
    });
  }

  // --- the session loop

  private async run(first: Session): Promise<void> {
    let session: Session | undefined = first;
    let previous: Session | undefined;
    let backoff = QUICK_BACKOFF_MS;
    while (!this.stopped) {
      if (session) {
        this.state = 'CONNECTED';
        this.error = '';
        this.sessionId = session.sessionId;
        this.credential = session.credential;
        if (session.resumeToken) this.resumeToken = session.resumeToken;
        backoff = QUICK_BACKOFF_MS;
        // Our old session may still hold our intercepts (a network blip, not a restart): end it first,
        // or restoring would conflict with ourselves.
        if (previous) await this.depart(previous.sessionId, previous.credential);
        previous = undefined;
        void this.restore(session.sessionId);
        this.emit('intercepts');
        // The root daemon's flows and DNS lookups go out under this session: it follows.
        this.emit('session', session.sessionId);
        const reason = await this.serve(session);
        if (this.stopped) break;
        previous = session;
        this.sessionId = '';
        this.credential = '';
        this.state = 'RECONNECTING';
        this.lostReason = reason;
        this.outage = { lostAt: Date.now(), reason, restored: [] };
        this.error = `lost the traffic manager at ${this.address}: ${reason}`;
        log.warn('lost the traffic manager; reconnecting', { manager: this.address, reason });
        for (const r of this.records.values()) {
          r.info = undefined;
          r.seen = false;
        }
        this.lastSnapshot = [];
        this.emit('intercepts');
        session = undefined;
      }
      await this.sleep(backoff);
      const lostFor = Date.now() - (this.outage?.lostAt ?? 0);
      backoff = lostFor < QUICK_RETRIES_FOR_MS ? QUICK_BACKOFF_MS : Math.min(backoff * 2, MAX_BACKOFF_MS);
      if (this.stopped) break;
      try {
        session = await this.arrive(this.client!, REARRIVE_TIMEOUT_MS, this.resumeToken);
        if (this.outage) this.outage.backAt = Date.now();
        log.info('reconnected to the traffic manager', { manager: this.address, session: session.sessionId });
      } catch (e) {
        this.lostReason = errorDetails(e);
        this.error = `lost the traffic manager at ${this.address}: ${this.lostReason}; reconnecting`;
        log.debug('reconnect failed', { reason: errorDetails(e) });
        if (this.stopped) break;
        this.client?.close();
        this.client = this.newClient(this.address);
      }
    }
  }

  /**
   * Arrives: with `resumeToken` if given and the manager takes it, else with an identity token (or none,
   * when the manager asks for none).
   */
  private async arrive(
    client: ManagerClient,
    timeoutMs = ARRIVE_TIMEOUT_MS,
    resumeToken = '',
  ): Promise<Session> {
    const started = Date.now();
    const version = await unary<VersionInfo>((md, o, cb) => client.version({}, md, o, cb), timeoutMs);
    const versionAt = Date.now();
    const info = {
      name: clientName(),
      installId: crypto
        .createHash('sha256')
        .update(`${os.hostname()}:${process.getuid?.()}`)
        .digest('hex')
        .slice(0, 16),
      version: VERSION,
      namespace: '',
    };
    const arriveWith = (token: string) =>
      unary<Arrival>(
        (md, o, cb) => client.arriveAsClient(info, withBearer(md, token), o, cb),
        CALL_TIMEOUT_MS,
      );
    const resumed = resumeToken ? await this.resume(arriveWith, resumeToken) : undefined;
    const session = resumed ?? (await this.arriveFresh(arriveWith, client));
    this.managerVersion = version.version;
    log.info('arrived at the traffic manager', {
      manager: client.getChannel().getTarget(),
      session: session.sessionId,
      ...(resumed ? { with: 'resume token' } : {}),
    });
    // Where a slow (re)arrival spent its time: reaching the manager (the port-forward, the channel's
    // connection) or arriving (the identity token, the manager's review of it).
    log.debug('arrival took', { versionMs: versionAt - started, arriveMs: Date.now() - versionAt });
    return {
      sessionId: session.sessionId,
      remainIntervalMs: session.remainIntervalMs || 5_000,
      credential: session.credential,
      resumeToken: session.resumeToken,
    };
  }

  /** Arrives with a resume token; undefined when the manager does not take it (expired, another key). */
  private async resume(
    arriveWith: (token: string) => Promise<Arrival>,
    token: string,
  ): Promise<Arrival | undefined> {
    try {
      return await arriveWith(token);
    } catch (e) {
      if (!hasStatus(e, grpc.status.UNAUTHENTICATED)) throw e;
      log.debug('the traffic manager did not take the resume token', { reason: errorDetails(e) });
      return undefined;
    }
  }

  /** Arrives with a new identity token, or with none when the manager asks for none. */
  private async arriveFresh(
    arriveWith: (token: string) => Promise<Arrival>,
    client: ManagerClient,
  ): Promise<Arrival> {
    const identity = this.identity;
    if (identity && !identity.onDemand) return arriveWith(await this.identityToken(identity));
    try {
      // No credential at all: the interceptor adds none while there is no session.
      return await arriveWith('');
    } catch (e) {
      if (!hasStatus(e, grpc.status.UNAUTHENTICATED)) throw e;
      if (!identity)
        throw new UserFacingError(
          grpc.status.UNAUTHENTICATED,
          `the traffic manager at ${client.getChannel().getTarget()} requires authentication (${errorDetails(e)}); connect through Kubernetes (without --manager-address) so tp can authenticate you with your kubeconfig`,
        );
      return arriveWith(await this.identityToken(identity));
    }
  }

  /** A fresh identity token; its failures (RBAC, no manager, the kubeconfig's credentials) are the user's to fix. */
  private async identityToken(identity: IdentitySource): Promise<string> {
    const started = Date.now();
    try {
      return await identity.token();
    } catch (e) {
      throw new UserFacingError(grpc.status.UNAUTHENTICATED, (e as Error).message);
    } finally {
      log.debug('identity token request took', { ms: Date.now() - started });
    }
  }

  /**
   * The last loss of the session in one line ("" if it was never lost): "lost the traffic manager at
   * 17:20:01 (reason); back at 17:20:33 after 32.1 s; intercepts restored: echo".
   */
  lastOutage(): string {
    const o = this.outage;
    if (!o) return '';
    const at = (t: number) =>
      new Date(t)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z');
    const lost = `lost the traffic manager at ${at(o.lostAt)} (${o.reason})`;
    if (o.backAt === undefined) return `${lost}; not back yet`;
    const back = `${lost}; back at ${at(o.backAt)} after ${((o.backAt - o.lostAt) / 1000).toFixed(1)} s`;
    return o.restored.length > 0 ? `${back}; intercepts restored: ${o.restored.join(', ')}` : back;
  }

  /** The credential of the session with this id, while it is the current one ('' otherwise). */
  credentialOf(sessionId: string): string {
    return sessionId && sessionId === this.sessionId ? this.credential : '';
  }

  /** Heartbeats, the intercept watch and the dial watch of one session; resolves when it is lost. */
  private serve(session: Session): Promise<string> {
    const client = this.client!;
    const sessionInfo = { sessionId: session.sessionId, remainIntervalMs: 0 };
    return new Promise((resolve) => {
      let over = false;
      const watch = client.watchIntercepts(sessionInfo);
      const dials = client.watchDial(sessionInfo);
      const clusterWatch = client.watchClusterInfo(sessionInfo);
      const direct = this.reach
        ? new DirectLinks(session.sessionId, this.reach, (c, req, flow) =>
            this.dial(c, session.sessionId, req, flow),
          )
        : undefined;
      this.direct = direct;
      const end = (reason: string) => {
        if (over) return;
        over = true;
        direct?.stop();
        if (this.direct === direct) this.direct = undefined;
        this.endSession = undefined;
        clearInterval(heartbeat);
        watch.cancel();
        dials.cancel();
        clusterWatch.cancel();
        resolve(reason);
      };
      this.endSession = end;
      const heartbeat = setInterval(() => {
        unary<RemainResponse>(
          (md, o, cb) => client.remain({ session: sessionInfo }, md, o, cb),
          CALL_TIMEOUT_MS,
        ).then(
          (r) => {
            if (r.resumeToken && !over) this.resumeToken = r.resumeToken;
          },
          (e) => {
            if (hasStatus(e, grpc.status.NOT_FOUND)) end('the traffic manager no longer knows this session');
            else log.debug('heartbeat failed', { reason: errorDetails(e) });
          },
        );
      }, session.remainIntervalMs);
      watch.on('data', (s: InterceptInfoSnapshot) => {
        this.applySnapshot(s.intercepts);
        direct?.sync(s.intercepts);
      });
      watch.on('error', (e) => end(errorDetails(e)));
      watch.on('end', () => end('the traffic manager ended the intercept watch'));
      dials.on('data', (req: DialRequest) => this.dial(client, session.sessionId, req));
      dials.on('error', (e) => end(`the dial stream failed: ${errorDetails(e)}`));
      dials.on('end', () => end('the traffic manager ended the dial stream'));
      // The cluster info is for the VIF and the status; the session's liveness is the other watches'.
      clusterWatch.on('data', (info: ClusterInfo) => {
        this.cluster = info;
        this.emit('cluster');
      });
      clusterWatch.on('error', (e) => {
        if (!over) log.debug('cluster info watch ended', { reason: errorDetails(e) });
      });
    });
  }

  private applySnapshot(intercepts: InterceptInfo[]): void {
    this.lastSnapshot = intercepts;
    for (const r of this.records.values()) {
      if (r.gone || !r.info) continue;
      const info = intercepts.find((i) => i.id === r.info!.id);
      if (info) {
        r.info = info;
        r.seen = true;
      } else if (r.seen) {
        // While the session lives, only an admin's revoke removes an intercept at the manager.
        r.gone = 'revoked at the traffic manager (tp revoke by someone allowed to end it)';
        r.info = undefined;
        log.warn('intercept removed by the traffic manager', { intercept: r.name });
      }
    }
    this.emit('intercepts');
  }

  /** Re-creates the intercepts of a lost session in the new one. */
  private async restore(sessionId: string): Promise<void> {
    const until = Date.now() + RESTORE_GRACE_MS;
    for (const r of [...this.records.values()]) {
      if (r.gone || r.info) continue;
      for (;;) {
        if (this.sessionId !== sessionId || this.records.get(r.name) !== r) return;
        try {
          r.info = await unary<InterceptInfo>(
            (md, o, cb) => this.client!.createIntercept({ session: this.session(), spec: r.spec }, md, o, cb),
            CALL_TIMEOUT_MS,
          );
          r.note = 'restored after the connection to the traffic manager was lost';
          this.outage?.restored.push(r.name);
          log.info('intercept restored', { intercept: r.name });
          this.applySnapshot(this.lastSnapshot);
          break;
        } catch (e) {
          // The workload's agent may not have re-arrived yet after a manager restart; a kube-apiserver that
          // has just restarted denies for a moment (its RBAC caches are still empty) or does not answer the
          // manager's access reviews at all (UNAVAILABLE, or this call's deadline). The intercept was
          // allowed a moment ago, so give all of them time. A lost session ends this loop (above); its
          // successor restores.
          if (RESTORE_RETRIED.some((code) => hasStatus(e, code)) && Date.now() < until) {
            log.debug('intercept not restored yet; retrying', { intercept: r.name, reason: errorDetails(e) });
            await new Promise((res) => setTimeout(res, 500));
            continue;
          }
          r.gone = `not restored after the connection to the traffic manager was lost: ${errorDetails(e)}`;
          log.warn('intercept not restored', { intercept: r.name, reason: errorDetails(e) });
          this.emit('intercepts');
          break;
        }
      }
    }
  }

  /**
   * A remote mount of one of this session's intercepts or ingests: `socket` (sshfs's end) pumped through
   * a mount flow to the agent that accepted it. No idle timeout: a mount may sit unused for hours.
   */
  openMountFlow(socket: net.Socket, interceptId: string, readWrite: boolean): Promise<FlowOutcome> {
    const client = this.requireSession();
    const info = streamInfo({
      connId: { protocol: 6, srcIp: '127.0.0.1', srcPort: 0, dstIp: '127.0.0.1', dstPort: 0 },
      sessionId: this.sessionId,
      interceptId,
      mount: true,
      mountReadWrite: readWrite,
      idleTimeoutMs: 0,
    });
    return originate(socket, TunnelStream.open(client, WORKSTATION_WINDOWS), info, { log });
  }

  /** An intercepted connection: open a tunnel for it and dial the local target. */
  /**
   * Serves one intercepted connection the manager or an agent asked for: on a flow connection of its own to
   * the agent when `flow` is given (daemons/user/direct-links.ts), else (or when that cannot be opened) on
   * a Tunnel call of `client`.
   */
  private dial(
    client: ManagerClient | AgentClient,
    sessionId: string,
    req: DialRequest,
    flow?: FlowOpener,
  ): void {
    const info = streamInfo({
      connId: req.connId,
      sessionId,
      relayId: req.relayId,
      dialTimeoutMs: req.dialTimeoutMs || DEFAULT_DIAL_TIMEOUT_MS,
    });
    const target = { host: req.targetHost, port: req.targetPort };
    const onCall = () => void dialTarget(TunnelStream.open(client, WORKSTATION_WINDOWS), info, target, log);
    if (!flow) {
      onCall();
      return;
    }
    flow(info, target).catch((e: Error) => {
      log.debug('no flow connection to the agent: the connection goes on a Tunnel call', {
        flow: formatConnectionId(req.connId),
        reason: e.message,
      });
      onCall();
    });
  }

  private waitForAgent(record: InterceptRecord): Promise<InterceptInfo> {
    return new Promise((resolve) => {
      const check = () => {
        const info = record.info;
        if (record.gone || this.records.get(record.name) !== record)
          return done({ disposition: D.REMOVED, message: record.gone ?? 'removed' });
        if (info && (info.disposition === D.ACTIVE || info.disposition === D.AGENT_ERROR)) done(info);
      };
      const done = (info: InterceptInfo | { disposition: D; message?: string }) => {
        clearTimeout(timer);
        this.off('intercepts', check);
        resolve(info as InterceptInfo);
      };
      const timer = setTimeout(() => done({ disposition: D.WAITING }), ACCEPT_TIMEOUT_MS);
      this.on('intercepts', check);
      check();
    });
  }

  private requireSession(): ManagerClient {
    if (this.state === 'DISCONNECTED' || !this.client)
      throw new UserFacingError(grpc.status.FAILED_PRECONDITION, 'not connected: run tp connect');
    if (this.state === 'RECONNECTING')
      throw new UserFacingError(
        grpc.status.UNAVAILABLE,
        `the traffic manager at ${this.address} is unreachable (${this.lostReason}); tp keeps reconnecting`,
      );
    return this.client;
  }

  private session(): SessionInfo {
    return { sessionId: this.sessionId, remainIntervalMs: 0 };
  }

  /** A manager error, with its status, for the CLI; a lost manager is said plainly. */
  private managerError(e: unknown): UserFacingError {
    if (!isServiceError(e)) return new UserFacingError(grpc.status.INTERNAL, errorDetails(e));
    if (e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.DEADLINE_EXCEEDED)
      return new UserFacingError(
        grpc.status.UNAVAILABLE,
        `the traffic manager at ${this.address} is unreachable: ${errorDetails(e)}`,
      );
    return new UserFacingError(e.code, errorDetails(e));
  }

  private async depart(sessionId: string, credential = this.credential): Promise<void> {
    const client = this.client;
    if (!client) return;
    await unary(
      (md, o, cb) => client.depart({ sessionId, remainIntervalMs: 0 }, withBearer(md, credential), o, cb),
      2_000,
    ).catch(() => {});
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wakeUp = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
