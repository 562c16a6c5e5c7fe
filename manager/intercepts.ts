// The intercept state machine, pure: creation (validation, port resolution, conflicts), the agents'
// reviews, and removal when the client leaves, departs or expires.
//
//   WAITING --(an agent of the workload reviews it ACTIVE)--> ACTIVE
//   WAITING --(every reviewing agent reports an error)-----> AGENT_ERROR (the agent's message)
//   ACTIVE  --(its last active pod goes away)---------------> WAITING
//   any     --(leave, depart, expiry)-----------------------> removed from the table
//
// One global intercept per (namespace, workload, app port): a second one, or a personal one beside it, is
// refused with the holder's name. Personal intercepts (an HTTP filter, http-filter/) share a port with
// each other unless their filters are the same.
import { formatFilter, isPersonal, normalizeFilter, sameFilter } from '../http-filter/filter.js';
import {
  InterceptDisposition as D,
  type InterceptInfo,
  type InterceptPodState,
  type InterceptSpec,
} from '../rpc/gen/manager.js';
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
}

export interface Review {
  podName: string;
  podIp: string;
  interceptId: string;
  disposition: D;
  message: string;
  environment: Record<string, string>;
}

export const interceptId = (sessionId: string, name: string) => `${sessionId}:${name}`;

export class InterceptTable {
  private readonly byId = new Map<string, InterceptInfo>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Checks a spec against the workload and fills in the defaults; throws InterceptError. */
  prepare(owner: InterceptOwner, spec: InterceptSpec, workload: Workload): InterceptSpec {
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
    const mine = this.byId.get(interceptId(owner.sessionId, name));
    if (mine)
      throw new InterceptError(
        'already-exists',
        `you already have an intercept named "${name}" (port ${mine.spec!.remotePort} of ${mine.spec!.workload}): ` +
          'tp leave it first, or choose another --name',
      );
    for (const other of this.byId.values()) {
      const o = other.spec!;
      if (
        o.namespace === resolved.namespace &&
        o.workload === resolved.workload &&
        o.remotePort === remotePort
      ) {
        const mineIsPersonal = httpFilter !== undefined;
        const theirs = o.httpFilter;
        if (mineIsPersonal && isPersonal(theirs) && !sameFilter(httpFilter!, theirs)) continue;
        const who = other.clientSessionId === owner.sessionId ? 'you' : o.client;
        const port = `port ${remotePort} of workload "${o.workload}" in namespace "${o.namespace}"`;
        const holder = `${who} (intercept "${o.name}"${isPersonal(theirs) ? `, ${formatFilter(theirs)}` : ''})`;
        throw new InterceptError(
          'already-exists',
          !isPersonal(theirs)
            ? `${port} is already intercepted by ${holder}` +
                (mineIsPersonal ? ': a personal intercept cannot share a port with a global one' : '')
            : !mineIsPersonal
              ? `${port} has a personal intercept by ${holder}: a global intercept would take its requests; ` +
                'add --http-header or --http-path-* to make yours personal too'
              : `${port} is already intercepted by ${holder} with the same filter: choose another header value`,
        );
      }
    }
    return resolved;
  }

  create(owner: InterceptOwner, spec: InterceptSpec, workload: Workload): InterceptInfo {
    const resolved = this.prepare(owner, spec, workload);
    const info: InterceptInfo = {
      id: interceptId(owner.sessionId, resolved.name),
      spec: resolved,
      clientSessionId: owner.sessionId,
      disposition: D.WAITING,
      message: 'waiting for an agent to accept the intercept',
      pods: [],
      environment: {},
      createdUnixMs: this.now(),
    };
    this.byId.set(info.id, info);
    return info;
  }

  /** Removes a client's intercept by name; throws not-found. */
  remove(sessionId: string, name: string): InterceptInfo {
    const info = this.byId.get(interceptId(sessionId, name));
    if (!info) throw new InterceptError('not-found', `no intercept named "${name}": see tp status`);
    this.byId.delete(info.id);
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
    for (const i of gone) this.byId.delete(i.id);
    return gone;
  }

  /** Removes every intercept of a client session (depart, expiry). */
  removeSession(sessionId: string): InterceptInfo[] {
    const gone = [...this.byId.values()].filter((i) => i.clientSessionId === sessionId);
    for (const i of gone) this.byId.delete(i.id);
    return gone;
  }

  /** An agent's review; undefined when the intercept is unknown (removed meanwhile). */
  review(r: Review): InterceptInfo | undefined {
    const info = this.byId.get(r.interceptId);
    if (!info) return undefined;
    const pod: InterceptPodState = {
      podName: r.podName,
      podIp: r.podIp,
      disposition: r.disposition,
      message: r.message,
    };
    info.pods = [...info.pods.filter((p) => p.podName !== r.podName), pod].sort((a, b) =>
      a.podName.localeCompare(b.podName),
    );
    if (r.disposition === D.ACTIVE && Object.keys(info.environment).length === 0)
      info.environment = { ...r.environment };
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

  forWorkload(name: string, namespace: string): InterceptInfo[] {
    return this.all().filter((i) => i.spec!.workload === name && i.spec!.namespace === namespace);
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
  const captured = workload.ports.map((p) => p.appPort);
  const list = captured.join(', ') || 'none';
  const where = `workload "${workload.name}" in namespace "${workload.namespace}"`;
  if (spec.remotePort) {
    if (!captured.includes(spec.remotePort))
      throw new InterceptError(
        'invalid-argument',
        `${where} does not capture port ${spec.remotePort}: its agent captures ${list}`,
      );
    return spec.remotePort;
  }
  if (spec.portName) {
    const byName = workload.ports.find((p) => p.name === spec.portName);
    if (!byName)
      throw new InterceptError(
        'invalid-argument',
        `${where} has no port named "${spec.portName}": it captures ${list}`,
      );
    return byName.appPort;
  }
  if (captured.length === 1) return captured[0]!;
  if (captured.length === 0) throw new InterceptError('invalid-argument', `${where} captures no port`);
  throw new InterceptError(
    'invalid-argument',
    `${where} captures ports ${list}: say which with --port LOCAL:REMOTE`,
  );
}
