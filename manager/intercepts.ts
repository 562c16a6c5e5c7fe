// The intercept state machine, pure: creation (validation, port resolution, conflicts), the agents'
// reviews, and removal when the client leaves, departs or expires.
//
//   WAITING --(an agent of the workload reviews it ACTIVE)--> ACTIVE
//   WAITING --(every reviewing agent reports an error)-----> AGENT_ERROR (the agent's message)
//   ACTIVE  --(its last active pod goes away)---------------> WAITING
//   any     --(leave, depart, revoke)-----------------------> removed from the table
//   any     --(its client's session is lost or expires)-----> held: agents no longer see it (traffic goes
//                                                              to the app); removed after the grace period
//   held    --(the same user on the same workstation intercepts that port again)--> replaced by the new one
//
// One global intercept per (namespace, workload, app port): a second one, or a personal one beside it, is
// refused with the holder's name, unless it is held (its session was lost) and the new session is of the same user on the same
// workstation (a crashed or disconnected daemon's successor): then the new intercept replaces it. A live
// session's intercept is never replaced: two daemons of one user on one machine are two clients (and a
// daemon that reconnects departs its old session first, which frees its intercepts). The same user is the authenticated
// Kubernetes user (the client's claimed name only where nothing authenticates, standalone), and the same
// workstation is the client's install id: a name alone never takes someone's intercept.
// Personal intercepts (an HTTP filter, http-filter/) share a port with each other unless their filters
// are the same. Ingests take no port and conflict with nothing.
import * as crypto from 'node:crypto';
import { formatFilter, isPersonal, normalizeFilter, sameFilter } from '../http-filter/filter.js';
import {
  InterceptDisposition as D,
  type InterceptInfo,
  type InterceptPodState,
  type InterceptSpec,
} from '../rpc/gen/manager.js';
import { resolveInterceptPort } from './intercept-port.js';
import type { Workload } from './workloads.js';

export type InterceptErrorCode = 'invalid-argument' | 'not-found' | 'already-exists';

/** A refusal the client shows the user as is. */
export class InterceptError extends Error {
  override name = 'InterceptError';
  constructor(
    readonly code: InterceptErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface InterceptOwner {
  sessionId: string;
  /** user@host, shown to whoever meets a conflict. */
  clientName: string;
  /**
   * Who may take this intercept back from a new session: the authenticated user and the workstation's
   * install id. Undefined (or an empty install id): nobody.
   */
  reclaimKey?: { user: string; installId: string };
}

/** The key that lets a new session take back its own stale intercepts, or undefined. */
function reclaimKeyOf(owner: InterceptOwner): string | undefined {
  const k = owner.reclaimKey;
  return k?.user && k.installId ? `${k.user}\u0000${k.installId}` : undefined;
}

export interface Review {
  podName: string;
  podIp: string;
  interceptId: string;
  disposition: D;
  message: string;
  environment: Record<string, string>;
  /** ACTIVE: the container the environment comes from ('' or absent: not said, an older agent). */
  container?: string;
  /** The agent's direct port (AgentInfo.direct_port); 0: it has none. */
  directPort?: number;
}

export const interceptId = (sessionId: string, name: string) => `${sessionId}:${name}`;

export class InterceptTable {
  private readonly byId = new Map<string, InterceptInfo>();
  /** Intercept id -> the reclaim key of the session that created it. */
  private readonly keys = new Map<string, string>();
  /** Held intercepts (their session was lost): id -> when they are removed (ms). */
  private readonly held = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Checks a spec against the workload and fills in the defaults; throws InterceptError. */
  prepare(owner: InterceptOwner, spec: InterceptSpec, workload: Workload): InterceptSpec {
    return this.check(owner, spec, workload).resolved;
  }

  /** prepare(), plus the stale intercepts of the same user and workstation the new one replaces. */
  private check(
    owner: InterceptOwner,
    spec: InterceptSpec,
    workload: Workload,
  ): { resolved: InterceptSpec; replaces: InterceptInfo[] } {
    if (spec.ingest) return { resolved: this.prepareIngest(owner, spec, workload), replaces: [] };
    const mechanism = spec.mechanism || 'tcp';
    if (mechanism !== 'tcp')
      throw new InterceptError(
        'invalid-argument',
        `mechanism "${mechanism}" is not supported: use --mechanism tcp`,
      );
    if (!spec.targetPort)
      throw new InterceptError('invalid-argument', 'the local port is missing: use --port LOCAL[:REMOTE]');
    const remotePort = resolveRemotePort(spec, workload);
    const name = spec.name || workload.name;
    let httpFilter: InterceptSpec['httpFilter'];
    if (isPersonal(spec.httpFilter)) {
      const n = normalizeFilter(spec.httpFilter);
      if ('error' in n) throw new InterceptError('invalid-argument', n.error);
      httpFilter = n.filter;
    }
    const resolved: InterceptSpec = {
      ...spec,
      name,
      workload: workload.name,
      namespace: workload.namespace,
      workloadKind: workload.kind,
      mechanism,
      remotePort,
      portName: workload.ports.find((p) => p.appPort === remotePort)?.name ?? '',
      targetHost: spec.targetHost || '127.0.0.1',
      client: owner.clientName,
      httpFilter,
    };
    this.checkName(owner, name);
    const key = reclaimKeyOf(owner);
    const replaces: InterceptInfo[] = [];
    for (const other of this.byId.values()) {
      const o = other.spec!;
      if (
        o.ingest ||
        o.namespace !== resolved.namespace ||
        o.workload !== resolved.workload ||
        o.remotePort !== remotePort
      )
        continue;
      if (this.held.has(other.id) && key !== undefined && this.keys.get(other.id) === key) {
        replaces.push(other);
        continue;
      }
      const mineIsPersonal = httpFilter !== undefined;
      const theirs = o.httpFilter;
      if (mineIsPersonal && isPersonal(theirs) && !sameFilter(httpFilter!, theirs)) continue;
      const who = other.clientSessionId === owner.sessionId ? 'you' : o.client;
      const until = this.held.get(other.id);
      const held =
        until === undefined
          ? ''
          : `; its session was lost and the intercept is held for ${Math.max(1, Math.ceil((until - this.now()) / 1000))} s ` +
            `more so that ${o.client} can take it back (or someone allowed to can tp revoke it)`;
      const port = `port ${remotePort} of workload "${o.workload}" in namespace "${o.namespace}"`;
      const holder = `${who} (intercept "${o.name}"${isPersonal(theirs) ? `, ${formatFilter(theirs)}` : ''})`;
      throw new InterceptError(
        'already-exists',
        (!isPersonal(theirs)
          ? `${port} is already intercepted by ${holder}` +
            (mineIsPersonal ? ': a personal intercept cannot share a port with a global one' : '')
          : !mineIsPersonal
            ? `${port} has a personal intercept by ${holder}: a global intercept would take its requests; ` +
              'add --http-header or --http-path-* to make yours personal too'
            : `${port} is already intercepted by ${holder} with the same filter: choose another header value`) +
          held,
      );
    }
    return { resolved, replaces };
  }

  /**
   * An ingest takes no traffic: no port, no mechanism, and no conflict with anyone else's intercepts or
   * ingests of the workload; only the name must be new for this client. The agent picks the container.
   */
  private prepareIngest(owner: InterceptOwner, spec: InterceptSpec, workload: Workload): InterceptSpec {
    const name = spec.name || workload.name;
    this.checkName(owner, name);
    return {
      ...spec,
      name,
      workload: workload.name,
      namespace: workload.namespace,
      workloadKind: workload.kind,
      mechanism: '',
      remotePort: 0,
      portName: '',
      targetHost: '',
      targetPort: 0,
      client: owner.clientName,
    };
  }

  private checkName(owner: InterceptOwner, name: string): void {
    const mine = this.byId.get(interceptId(owner.sessionId, name));
    if (!mine) return;
    const what = mine.spec!.ingest
      ? `an ingest named "${name}" (of ${mine.spec!.workload})`
      : `an intercept named "${name}" (port ${mine.spec!.remotePort} of ${mine.spec!.workload})`;
    throw new InterceptError(
      'already-exists',
      `you already have ${what}: tp leave it first, or choose another --name`,
    );
  }

  /**
   * Creates an intercept or ingest; the stale intercepts of the same user and workstation it replaces are
   * removed and returned in `replaced`.
   */
  create(
    owner: InterceptOwner,
    spec: InterceptSpec,
    workload: Workload,
  ): InterceptInfo & { replaced?: InterceptInfo[] } {
    const { resolved, replaces } = this.check(owner, spec, workload);
    for (const r of replaces) this.drop(r.id);
    const info: InterceptInfo = {
      id: interceptId(owner.sessionId, resolved.name),
      spec: resolved,
      clientSessionId: owner.sessionId,
      disposition: D.WAITING,
      message: 'waiting for an agent to accept the intercept',
      pods: [],
      environment: {},
      createdUnixMs: this.now(),
      container: '',
      mountPoint: '',
      mountReadWrite: false,
      // An ingest takes no connections, so it needs no way to receive them.
      directToken: resolved.ingest ? '' : crypto.randomBytes(24).toString('base64url'),
      localMountPort: 0,
    };
    this.byId.set(info.id, info);
    const key = reclaimKeyOf(owner);
    if (key !== undefined) this.keys.set(info.id, key);
    return replaces.length > 0 ? { ...info, replaced: replaces } : info;
  }

  private drop(id: string): void {
    this.byId.delete(id);
    this.keys.delete(id);
    this.held.delete(id);
  }

  /**
   * A client's session was lost (its stream closed, keepalives unanswered, expiry): its intercepts are
   * held until `untilMs` — agents no longer see them, so traffic goes to the app — so that the same user
   * on the same workstation can take them back. Returns the intercepts now held.
   */
  holdSession(sessionId: string, untilMs: number): InterceptInfo[] {
    const held = [...this.byId.values()].filter((i) => i.clientSessionId === sessionId);
    for (const i of held) {
      this.held.set(i.id, untilMs);
      i.pods = [];
      i.disposition = D.WAITING;
      i.message = `the intercepting client's session was lost; held until ${new Date(untilMs).toISOString()}`;
    }
    return held;
  }

  /** Whether an intercept is held (its session lost). */
  isHeld(id: string): boolean {
    return this.held.has(id);
  }

  /** Removes the held intercepts whose grace period is over; returns them. */
  expireHeld(): InterceptInfo[] {
    const t = this.now();
    const gone: InterceptInfo[] = [];
    for (const [id, until] of this.held)
      if (until <= t) {
        const info = this.byId.get(id);
        if (info) gone.push(info);
        this.drop(id);
      }
    return gone;
  }

  /** Removes a client's intercept by name; throws not-found. */
  remove(sessionId: string, name: string): InterceptInfo {
    const info = this.byId.get(interceptId(sessionId, name));
    if (!info) throw new InterceptError('not-found', `no intercept named "${name}": see tp status`);
    this.drop(info.id);
    return info;
  }

  /** Removes every intercept of a workload (one app port, or all with 0), whoever holds it: a revoke. */
  revoke(workload: string, namespace: string, remotePort: number): InterceptInfo[] {
    const gone = [...this.byId.values()].filter(
      (i) =>
        i.spec!.workload === workload &&
        i.spec!.namespace === namespace &&
        (remotePort === 0 || i.spec!.remotePort === remotePort),
    );
    for (const i of gone) this.drop(i.id);
    return gone;
  }

  /** Removes every intercept of a client session (depart, expiry). */
  removeSession(sessionId: string): InterceptInfo[] {
    const gone = [...this.byId.values()].filter((i) => i.clientSessionId === sessionId);
    for (const i of gone) this.drop(i.id);
    return gone;
  }

  /** An agent's review; undefined when the intercept is unknown (removed meanwhile). */
  review(r: Review): InterceptInfo | undefined {
    const info = this.byId.get(r.interceptId);
    if (!info || this.held.has(info.id)) return undefined;
    const pod: InterceptPodState = {
      podName: r.podName,
      podIp: r.podIp,
      disposition: r.disposition,
      message: r.message,
      directPort: r.directPort ?? 0,
    };
    info.pods = [...info.pods.filter((p) => p.podName !== r.podName), pod].sort((a, b) =>
      a.podName.localeCompare(b.podName),
    );
    if (r.disposition === D.ACTIVE && !info.container && Object.keys(info.environment).length === 0) {
      info.environment = { ...r.environment };
      info.container = r.container ?? '';
    }
    settle(info);
    return info;
  }

  /** A pod's agent went away: its reviews no longer count. Returns the intercepts that changed. */
  podGone(workload: string, namespace: string, podName: string): InterceptInfo[] {
    const changed: InterceptInfo[] = [];
    for (const info of this.byId.values()) {
      if (info.spec!.workload !== workload || info.spec!.namespace !== namespace) continue;
      const before = info.pods.length;
      info.pods = info.pods.filter((p) => p.podName !== podName);
      if (info.pods.length !== before) {
        settle(info);
        changed.push(info);
      }
    }
    return changed;
  }

  get(id: string): InterceptInfo | undefined {
    return this.byId.get(id);
  }

  all(): InterceptInfo[] {
    return [...this.byId.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  forClient(sessionId: string): InterceptInfo[] {
    return this.all().filter((i) => i.clientSessionId === sessionId);
  }

  /** A workload's intercepts that take traffic or wait for it (held ones not: agents pass their traffic through). */
  forWorkload(name: string, namespace: string): InterceptInfo[] {
    return this.all().filter(
      (i) => i.spec!.workload === name && i.spec!.namespace === namespace && !this.held.has(i.id),
    );
  }
}

/** The intercept's disposition follows its pods: any ACTIVE wins, then errors, else WAITING. */
function settle(info: InterceptInfo): void {
  const active = info.pods.some((p) => p.disposition === D.ACTIVE);
  const failed = info.pods.find((p) => p.disposition === D.AGENT_ERROR);
  if (active) {
    info.disposition = D.ACTIVE;
    info.message = '';
  } else if (failed) {
    info.disposition = D.AGENT_ERROR;
    info.message = `agent of pod ${failed.podName}: ${failed.message || 'failed'}`;
  } else {
    info.disposition = D.WAITING;
    info.message = 'waiting for an agent to accept the intercept';
  }
}

function resolveRemotePort(spec: InterceptSpec, workload: Workload): number {
  const r = resolveInterceptPort(
    spec,
    workload.ports,
    `workload "${workload.name}" in namespace "${workload.namespace}"`,
  );
  if ('error' in r) throw new InterceptError('invalid-argument', r.error);
  return r.appPort;
}
