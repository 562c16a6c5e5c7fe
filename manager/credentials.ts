// The credentials the traffic manager issues and checks, pure apart from the clock and the random key:
// - identity tokens: "this is Kubernetes user U (groups, uid, extra)", issued through the Kubernetes
//   aggregation layer after the API server authenticated U (manager/kubernetes/session-api.ts), valid for a minute and
//   for one arrival only;
// - session credentials: the proof that a call comes from the holder of a session, handed out in the
//   answer to ArriveAs* (an HMAC of the session id, so nothing is stored per session).
// Both are signed with a key the manager draws at start and never writes anywhere: a restarted manager
// knows no session anyway, and its clients fetch a new identity token when they arrive again.
import * as crypto from 'node:crypto';

/** A Kubernetes user as the API server authenticated it (what a SubjectAccessReview names). */
export interface Identity {
  user: string;
  uid: string;
  groups: string[];
  extra: Record<string, string[]>;
}

export const IDENTITY_TOKEN_TTL_MS = 60_000;
const IDENTITY_PREFIX = 'tpid1.';
const SESSION_PREFIX = 'tpsc1.';

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
    if (!token.startsWith(IDENTITY_PREFIX))
      return { ok: false, reason: 'the credential is not an identity token of this traffic manager' };
    const [payload, mac] = token.slice(IDENTITY_PREFIX.length).split('.');
    if (!payload || !mac || !equal(mac, this.mac('identity', payload)))
      return {
        ok: false,
        reason: 'the identity token was not issued by this traffic manager (it restarted meanwhile?)',
      };
    let claims: IdentityClaims;
    try {
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as IdentityClaims;
    } catch {
      return { ok: false, reason: 'the identity token is malformed' };
    }
    const t = this.now();
    this.forgetExpired(t);
    if (!(claims.exp > t)) return { ok: false, reason: 'the identity token expired' };
    if (this.used.has(claims.jti)) return { ok: false, reason: 'the identity token was already used' };
    this.used.set(claims.jti, claims.exp);
    return {
      ok: true,
      value: {
        user: claims.user,
        uid: claims.uid ?? '',
        groups: claims.groups ?? [],
        extra: claims.extra ?? {},
      },
    };
  }

  sessionCredential(sessionId: string): string {
    return `${SESSION_PREFIX}${this.mac('session', sessionId)}`;
  }

  /** Whether the credential a call presents is the one of the session it names. */
  verifySession(sessionId: string, credential: string): Verified<string> {
    if (!credential) return { ok: false, reason: 'the call carries no session credential' };
    if (!sessionId) return { ok: false, reason: 'the call names no session' };
    if (!equal(credential, this.sessionCredential(sessionId)))
      return { ok: false, reason: `the credential is not the one of session ${sessionId}` };
    return { ok: true, value: sessionId };
  }

  private forgetExpired(t: number): void {
    for (const [jti, exp] of this.used) if (exp <= t) this.used.delete(jti);
  }
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}
