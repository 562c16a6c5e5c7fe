// Who may call the traffic manager, and what they may do: the gate every handler passes through.
//
// - Clients arrive with an identity token (credentials.ts) that the manager issued through the Kubernetes
//   API server to an authenticated user; agents arrive with their pod's projected ServiceAccount token,
//   which the cluster integration reviews (kubernetes/access-review.ts). Every later call carries the session's
//   credential from the Arrival.
// - Each action of a client is authorized as its Kubernetes user (authorization.ts, SubjectAccessReview).
// - Tunnel streams open only for a session whose credential they carry, and a workstation's outbound
//   flows only to the cluster's networks (plus the CIDRs the chart allows).
//
// Modes: enforcing refuses; permissive lets everything through and logs each refusal it would have made
// ("permissive: would refuse"), for migrating; off (standalone, no Kubernetes to ask) checks nothing.
import type { Metadata } from '@grpc/grpc-js';
import type { Logger } from '../logging/logger.js';
import { type Cidr, cidrContains } from '../netaddr/parse.js';
import { bearerToken } from '../rpc/call-credentials.js';
import type { AgentInfo } from '../rpc/gen/manager.js';
import { type Action, decide, type ResourceCheck, requiredChecks } from './authorization.js';
import { CredentialAuthority, type Identity, type Verified } from './credentials.js';
import type { ClientSession, Session } from './sessions.js';

export type SecurityMode = 'enforcing' | 'permissive' | 'off';

export const SECURITY_MODES: SecurityMode[] = ['enforcing', 'permissive', 'off'];

/** Answers "may this user do this?" (Kubernetes: a SubjectAccessReview). */
export interface Authorizer {
  /** Rejects when the cluster cannot answer (the action is then refused, in enforcing mode). */
  allowed(identity: Identity, check: ResourceCheck): Promise<boolean>;
}

/** What the cluster vouches for about an agent: its pod, and the ServiceAccount the token belongs to. */
export interface AgentIdentity {
  serviceAccount: string;
  namespace: string;
  podName: string;
  podUid: string;
}

/** Checks an agent's token and that its pod is a pod of the workload it claims (kubernetes/access-review.ts). */
export interface AgentVerifier {
  verify(token: string, claim: AgentInfo): Promise<Verified<AgentIdentity>>;
}

export class AccessDenied extends Error {
  override name = 'AccessDenied';
  constructor(
    readonly code: 'unauthenticated' | 'permission-denied',
    message: string,
  ) {
    super(message);
  }
}

/**
 * The cluster could not answer whether the user may act (the API server unreachable, e.g. while it
 * restarts): not a refusal, so callers see UNAVAILABLE and try again.
 */
export class AuthorizationUnavailable extends Error {
  override name = 'AuthorizationUnavailable';
}

export interface AccessControlOptions {
  mode: SecurityMode;
  credentials: CredentialAuthority;
  log: Logger;
  authorizer?: Authorizer;
  agents?: AgentVerifier;
  /** Where a workstation's outbound flows may go (the cluster's networks and the chart's extra CIDRs). */
  reachable?: () => Cidr[];
}

/** How to arrive, for a refused client: the one fix there is. */
const CONNECT_HINT =
  'connect with `tp connect`, which authenticates you with your kubeconfig through the Kubernetes API server';
/** A refused resume token: the client falls back to an identity token by itself. */
const RESUME_HINT = 'arrive with an identity token (tp does so by itself)';

export class AccessControl {
  readonly mode: SecurityMode;
  readonly credentials: CredentialAuthority;
  /** Refusals so far by code (permissive mode counts the ones it would have made): the manager's metrics. */
  readonly refusals: Partial<Record<AccessDenied['code'], number>> = {};
  private readonly log: Logger;

  constructor(private readonly opts: AccessControlOptions) {
    this.mode = opts.mode;
    this.credentials = opts.credentials;
    this.log = opts.log;
  }

  /**
   * A refusal: thrown in enforcing mode, logged in permissive mode (the call goes on), ignored when off.
   * Returns normally only when the call may go on.
   */
  refuse(code: AccessDenied['code'], message: string, fields: Record<string, unknown> = {}): void {
    if (this.refuses(code, message, fields)) throw new AccessDenied(code, message);
  }

  /** Whether a refusal stands (enforcing); permissive logs it and says no, off says no. */
  private refuses(code: AccessDenied['code'], message: string, fields: Record<string, unknown>): boolean {
    if (this.mode === 'off') return false;
    this.refusals[code] = (this.refusals[code] ?? 0) + 1;
    if (this.mode === 'permissive') {
      this.log.warn('permissive: would refuse', { code, reason: message, ...fields });
      return false;
    }
    this.log.info('refused', { code, reason: message, ...fields });
    return true;
  }

  /** ArriveAsClient: the identity its token proves (undefined when off, or let through by permissive). */
  clientArrival(metadata: Metadata | undefined): { identity?: Identity; resumes?: string } {
    if (this.mode === 'off') return {};
    const token = bearerToken(metadata);
    if (CredentialAuthority.isResumeToken(token)) {
      const r = this.credentials.verifyResume(token);
      if (r.ok) return { identity: r.value.identity, resumes: r.value.sessionId };
      this.refuse('unauthenticated', `cannot resume a client session: ${r.reason}; ${RESUME_HINT}`, {
        call: 'ArriveAsClient',
      });
      return {};
    }
    const v = this.credentials.verifyIdentity(token);
    if (v.ok) return { identity: v.value };
    this.refuse('unauthenticated', `cannot start a client session: ${v.reason}; ${CONNECT_HINT}`, {
      call: 'ArriveAsClient',
    });
    return {};
  }

  /** A fresh resume token for a client session (Arrival, Remain); '' without authentication. */
  resumeToken(s: { id: string; identity?: Identity }): string {
    return s.identity ? this.credentials.issueResume(s.identity, s.id) : '';
  }

  /** ArriveAsAgent: what the cluster vouches for (undefined when off, or let through by permissive). */
  async agentArrival(metadata: Metadata | undefined, claim: AgentInfo): Promise<AgentIdentity | undefined> {
    if (this.mode === 'off') return undefined;
    const token = bearerToken(metadata);
    const claimed = `${claim.namespace}/${claim.name} (pod ${claim.podName})`;
    let v: Verified<AgentIdentity>;
    if (!token) v = { ok: false, reason: 'the agent presented no ServiceAccount token' };
    else if (!this.opts.agents) v = { ok: false, reason: 'this traffic manager cannot verify agents' };
    else {
      try {
        v = await this.opts.agents.verify(token, claim);
      } catch (e) {
        v = { ok: false, reason: `its token could not be reviewed: ${(e as Error).message}` };
      }
    }
    if (v.ok) return v.value;
    this.refuse('unauthenticated', `agent refused for ${claimed}: ${v.reason}`, { call: 'ArriveAsAgent' });
    return undefined;
  }

  /** A call naming a session must carry that session's credential. */
  session(metadata: Metadata | undefined, session: Session, call: string): void {
    const v = this.credentials.verifySession(session.id, bearerToken(metadata));
    if (!v.ok) this.refuse('unauthenticated', `${call} refused: ${v.reason}`, { call, session: session.id });
  }

  /** An action of a client session, authorized as its Kubernetes user; throws AccessDenied in enforcing mode. */
  async authorize(session: ClientSession, action: Action, call: string): Promise<void> {
    if (this.mode === 'off') return;
    const identity = session.identity;
    if (!identity) {
      this.refuse('permission-denied', `${call} refused: the session has no authenticated user`, { call });
      return;
    }
    const { answers, unanswered } = await this.answers(identity, requiredChecks(action));
    const decision = decide(identity, action, answers);
    if (decision.allowed) return;
    if (unanswered && this.mode === 'enforcing')
      throw new AuthorizationUnavailable(
        `${call}: cannot check the permissions of ${identity.user}: the Kubernetes API server did not answer the traffic manager (${unanswered}); try again`,
      );
    this.refuse('permission-denied', decision.message, { call, user: identity.user });
  }

  /** Whether the session's user may see an action's object (listing); permissive and off see all. */
  async may(session: ClientSession, action: Action): Promise<boolean> {
    if (this.mode === 'off') return true;
    const identity = session.identity;
    const allowed =
      identity !== undefined &&
      decide(identity, action, (await this.answers(identity, requiredChecks(action))).answers).allowed;
    if (!allowed && this.mode === 'permissive') {
      this.log.warn('permissive: would hide', {
        user: identity?.user ?? '(none)',
        action: action.kind,
        namespace: 'namespace' in action ? action.namespace : undefined,
      });
      return true;
    }
    return allowed;
  }

  /**
   * Why a tunnel stream of this session may not open, or undefined when it may. `credential`: what the
   * stream carries (a Tunnel call's bearer token, a flow connection's OPEN.credential).
   */
  tunnelRefusal(
    session: Session,
    credential: string,
    flow: { dstIp: string; outbound: boolean; label: string },
  ): string | undefined {
    if (this.mode === 'off') return undefined;
    const v = this.credentials.verifySession(session.id, credential);
    let reason: string | undefined;
    if (!v.ok) reason = `tunnel refused: ${v.reason}`;
    else if (flow.outbound && session.kind === 'client') {
      const reachable = this.opts.reachable?.() ?? [];
      if (!reachable.some((c) => cidrContains(c, flow.dstIp)))
        reason = `tunnel refused: ${flow.dstIp} is not in the cluster's networks (${reachable.map((c) => c.text).join(', ') || 'none known'}); an admin can allow more with the chart value security.tunnel.allowedCIDRs`;
    }
    if (!reason) return undefined;
    return this.refuses('permission-denied', reason, { flow: flow.label, session: session.id })
      ? reason
      : undefined;
  }

  /** The cluster's answer to each check (false where it gave none), and why one went unanswered. */
  private async answers(
    identity: Identity,
    checks: ResourceCheck[],
  ): Promise<{ answers: boolean[]; unanswered?: string }> {
    const authorizer = this.opts.authorizer;
    if (!authorizer) return { answers: checks.map(() => false) };
    let unanswered: string | undefined;
    const answers = await Promise.all(
      checks.map((c) =>
        authorizer.allowed(identity, c).catch((e: unknown) => {
          this.log.warn('cannot ask the cluster for an authorization decision', {
            user: identity.user,
            error: (e as Error).message,
          });
          unanswered ??= (e as Error).message;
          return false;
        }),
      ),
    );
    return { answers, unanswered };
  }
}
