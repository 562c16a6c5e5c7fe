// The credentials the traffic manager issues and checks, pure apart from the clock and the random key:
// - identity tokens: "this is Kubernetes user U (groups, uid, extra)", issued through the Kubernetes
//   aggregation layer after the API server authenticated U (manager/kubernetes/session-api.ts), valid for a minute and
//   for one arrival only;
// - session credentials: the proof that a call comes from the holder of a session, handed out in the
//   answer to ArriveAs* (an HMAC of the session id, so nothing is stored per session);
// - resume tokens: "this client session was user U", handed to a client with its Arrival and renewed by
//   every Remain, valid for RESUME_TOKEN_TTL_MS: the client arrives again with it after losing its session,
//   without a round trip through the API server's aggregation layer, which answers 503 for seconds after
//   the manager's pod changed (its availability check must see the new pod first; docs/faults.md).
// All three are signed with one key. In Kubernetes the chart keeps it in a Secret (signing-key.ts), so a
// restarted manager accepts the resume tokens and identity tokens of the one before; standalone, the manager
// draws one at start.
import * as crypto from 'node:crypto';
import { sameSecret } from '../rpc/call-credentials.js';

/** A Kubernetes user as the API server authenticated it (what a SubjectAccessReview names). */
export interface Identity {
  user: string;
  uid: string;
  groups: string[];
  extra: Record<string, string[]>;
}

export const IDENTITY_TOKEN_TTL_MS = 60_000;
/**
 * How long a resume token stays valid: renewed with every heartbeat (at most 5 s apart), so it outlives
 * any manager restart or network outage the client rides out, and one taken from a workstation is good
 * for minutes, not for the life of the session.
 */
export const RESUME_TOKEN_TTL_MS = 5 * 60_000;
const IDENTITY_PREFIX = 'tpid1.';
const SESSION_PREFIX = 'tpsc1.';
const RESUME_PREFIX = 'tprs1.';
/** The key's size; a key file must hold at least this many bytes. */
export const KEY_BYTES = 32;

/** What a resume token vouches for: the user, and the session it was issued to (for the logs). */
export interface Resumption {
  identity: Identity;
  sessionId: string;
}

interface ResumeClaims extends Identity {
  exp: number;
  sid: string;
}

interface IdentityClaims extends Identity {
  /** Expiry, ms since the epoch. */
  exp: number;
  /** Unique per token: an identity token works for one arrival only. */
  jti: string;
}

export type Verified<T> = { ok: true; value: T } | { ok: false; reason: string };

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export class CredentialAuthority {
  private readonly used = new Map<string, number>();

  constructor(
    private readonly key: Buffer = crypto.randomBytes(32),
    private readonly now: () => number = Date.now,
  ) {}

  private mac(purpose: string, data: string): string {
    return crypto.createHmac('sha256', this.key).update(`${purpose}\n${data}`).digest('base64url');
  }

  issueIdentity(identity: Identity, ttlMs = IDENTITY_TOKEN_TTL_MS): { token: string; expiresAt: number } {
    const claims: IdentityClaims = {
      user: identity.user,
      uid: identity.uid,
      groups: identity.groups,
      extra: identity.extra,
      exp: this.now() + ttlMs,
      jti: crypto.randomUUID(),
    };
    const payload = b64url(JSON.stringify(claims));
    return { token: `${IDENTITY_PREFIX}${payload}.${this.mac('identity', payload)}`, expiresAt: claims.exp };
  }

  /** Checks an identity token and uses it up. */
  verifyIdentity(token: string): Verified<Identity> {
    if (!token) return { ok: false, reason: 'no identity token' };
    const opened = this.open<IdentityClaims>(token, IDENTITY_PREFIX, 'identity', 'identity token');
    if (!opened.ok) return opened;
    const claims = opened.value;
    const t = this.now();
    this.forgetExpired(t);
    if (this.used.has(claims.jti)) return { ok: false, reason: 'the identity token was already used' };
    this.used.set(claims.jti, claims.exp);
    return { ok: true, value: identityOf(claims) };
  }

  /** A resume token for a client session of `identity` (see RESUME_TOKEN_TTL_MS). */
  issueResume(identity: Identity, sessionId: string, ttlMs = RESUME_TOKEN_TTL_MS): string {
    const claims: ResumeClaims = { ...identityOf(identity), exp: this.now() + ttlMs, sid: sessionId };
    const payload = b64url(JSON.stringify(claims));
    return `${RESUME_PREFIX}${payload}.${this.mac('resume', payload)}`;
  }

  /** Checks a resume token (usable until it expires: a client may need several tries to arrive). */
  verifyResume(token: string): Verified<Resumption> {
    const opened = this.open<ResumeClaims>(token, RESUME_PREFIX, 'resume', 'resume token');
    if (!opened.ok) return opened;
    return { ok: true, value: { identity: identityOf(opened.value), sessionId: opened.value.sid ?? '' } };
  }

  /** Whether `token` looks like a resume token (it may still be invalid). */
  static isResumeToken(token: string): boolean {
    return token.startsWith(RESUME_PREFIX);
  }

  /** Checks a signed token's prefix, MAC, encoding and expiry; returns its claims. */
  private open<T extends { exp: number }>(
    token: string,
    prefix: string,
    purpose: string,
    what: string,
  ): Verified<T> {
    if (!token.startsWith(prefix))
      return { ok: false, reason: `the credential is not an ${what} of this traffic manager` };
    const [payload, mac] = token.slice(prefix.length).split('.');
    if (!payload || !mac || !sameSecret(mac, this.mac(purpose, payload)))
      return {
        ok: false,
        reason: `the ${what} was not issued by this traffic manager (it was reinstalled, or its key changed)`,
      };
    let claims: T;
    try {
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as T;
    } catch {
      return { ok: false, reason: `the ${what} is malformed` };
    }
    if (!(claims.exp > this.now())) return { ok: false, reason: `the ${what} expired` };
    return { ok: true, value: claims };
  }

  sessionCredential(sessionId: string): string {
    return `${SESSION_PREFIX}${this.mac('session', sessionId)}`;
  }

  /** Whether the credential a call presents is the one of the session it names. */
  verifySession(sessionId: string, credential: string): Verified<string> {
    if (!credential) return { ok: false, reason: 'the call carries no session credential' };
    if (!sessionId) return { ok: false, reason: 'the call names no session' };
    if (!sameSecret(credential, this.sessionCredential(sessionId)))
      return { ok: false, reason: `the credential is not the one of session ${sessionId}` };
    return { ok: true, value: sessionId };
  }

  private forgetExpired(t: number): void {
    for (const [jti, exp] of this.used) if (exp <= t) this.used.delete(jti);
  }
}

function identityOf(c: Partial<Identity>): Identity {
  return { user: c.user ?? '', uid: c.uid ?? '', groups: c.groups ?? [], extra: c.extra ?? {} };
}
