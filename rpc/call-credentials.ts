// Credentials on the manager's gRPC calls, as metadata: "authorization: Bearer <token>". Arriving carries a
// proof of identity (a client's identity token, an agent's ServiceAccount token); every later call carries
// the session's credential from the Arrival. A client interceptor adds it to every call of a channel, so
// code that opens calls (tunnel streams, watches) never handles it.
import * as crypto from 'node:crypto';
import { InterceptingCall, type Interceptor, type Metadata } from '@grpc/grpc-js';

export const AUTHORIZATION_METADATA = 'authorization';

/** Adds "authorization: Bearer <credential()>" to every call that does not already carry one. */
export function bearerInterceptor(credential: () => string | undefined): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        const c = credential();
        if (c && metadata.get(AUTHORIZATION_METADATA).length === 0)
          metadata.set(AUTHORIZATION_METADATA, `Bearer ${c}`);
        next(metadata, listener);
      },
    });
}

/** The metadata a call is made with: "authorization: Bearer <token>" when it carries a credential. */
export function withBearer(metadata: Metadata, token: string | undefined): Metadata {
  if (token) metadata.set(AUTHORIZATION_METADATA, `Bearer ${token}`);
  return metadata;
}

/** The bearer token a call carries, or '' when it carries none. */
export function bearerToken(metadata: Metadata | undefined): string {
  const value = metadata?.get(AUTHORIZATION_METADATA)[0];
  if (typeof value !== 'string') return '';
  const m = /^Bearer\s+(\S+)\s*$/i.exec(value);
  return m ? m[1]! : '';
}

/**
 * Whether a presented secret is the expected one, in a time that does not depend on where they differ (a
 * session credential at the manager, an intercept's direct token at an agent). An empty one never matches.
 */
export function sameSecret(presented: string, expected: string): boolean {
  const x = Buffer.from(presented);
  const y = Buffer.from(expected);
  return x.length === y.length && x.length > 0 && crypto.timingSafeEqual(x, y);
}
