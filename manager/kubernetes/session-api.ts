// The session API: how a workstation proves to the traffic manager who its user is, without the manager
// ever seeing the user's credentials. The chart registers the manager as an aggregated API
// (APIService v1alpha1.<manager namespace>.sessions.tp.dev). A workstation creates a SessionToken there
// with its normal kubeconfig credentials, whatever their kind (client certificate, bearer token, exec or
// OIDC plugin); the API server authenticates the user, authorizes `create sessiontokens`, and proxies the
// request to the manager over TLS with its front-proxy client certificate and the user in X-Remote-*
// headers. The manager trusts those headers only from a client certificate that chains to the
// requestheader CA and names an allowed proxy (ConfigMap kube-system/extension-apiserver-authentication),
// and answers with an identity token (manager/credentials.ts): valid for a minute, for one arrival.
//
// Served on the webhook's HTTPS server (webhook-server.ts): the same certificate, the same caller. Its names
// (group, version, resource) are in annotations.ts, which the workstation's side (session-token.ts) shares.
import type * as http from 'node:http';
import type { TLSSocket } from 'node:tls';
import { SESSION_API_VERSION, SESSION_TOKEN_KIND, SESSION_TOKEN_RESOURCE } from '../../kube/annotations.js';
import type { CredentialAuthority, Identity } from '../credentials.js';

/** The aggregation layer's request-header authentication, as kube-system/extension-apiserver-authentication publishes it. */
export interface RequestHeaderConfig {
  /** PEM: the CA that signs the front proxy's client certificate. */
  clientCa: string;
  /** Common names the proxy's certificate may have; empty: any the CA signed. */
  allowedNames: string[];
  usernameHeaders: string[];
  uidHeaders: string[];
  groupHeaders: string[];
  extraHeaderPrefixes: string[];
}

function jsonList(value: string | undefined, fallback: string[]): string[] {
  if (!value) return fallback;
  try {
    const parsed = JSON.parse(value) as unknown;
    return Array.isArray(parsed) ? parsed.filter((x): x is string => typeof x === 'string') : fallback;
  } catch {
    return fallback;
  }
}

/** The ConfigMap's data, parsed; undefined when it has no requestheader CA (aggregation not configured). */
export function parseRequestHeaderConfig(
  data: Record<string, string> | undefined,
): RequestHeaderConfig | undefined {
  const clientCa = data?.['requestheader-client-ca-file'];
  if (!clientCa?.includes('BEGIN CERTIFICATE')) return undefined;
  return {
    clientCa,
    allowedNames: jsonList(data?.['requestheader-allowed-names'], []),
    usernameHeaders: jsonList(data?.['requestheader-username-headers'], ['X-Remote-User']),
    uidHeaders: jsonList(data?.['requestheader-uid-headers'], ['X-Remote-Uid']),
    groupHeaders: jsonList(data?.['requestheader-group-headers'], ['X-Remote-Group']),
    extraHeaderPrefixes: jsonList(data?.['requestheader-extra-headers-prefix'], ['X-Remote-Extra-']),
  };
}

type Headers = Record<string, string[] | undefined>;

/** The user the front proxy names in its headers (headers as node's headersDistinct gives them). */
export function identityFromHeaders(headers: Headers, cfg: RequestHeaderConfig): Identity | undefined {
  const first = (names: string[]) =>
    names.map((n) => headers[n.toLowerCase()]?.find((v) => v !== '')).find((v) => v !== undefined);
  const user = first(cfg.usernameHeaders);
  if (!user) return undefined;
  const groups = cfg.groupHeaders.flatMap((n) => headers[n.toLowerCase()] ?? []);
  const extra: Record<string, string[]> = {};
  for (const prefix of cfg.extraHeaderPrefixes.map((p) => p.toLowerCase())) {
    for (const [name, values] of Object.entries(headers)) {
      if (!name.startsWith(prefix) || !values) continue;
      const key = decodeURIComponent(name.slice(prefix.length)).toLowerCase();
      extra[key] = [...(extra[key] ?? []), ...values];
    }
  }
  return { user, uid: first(cfg.uidHeaders) ?? '', groups, extra };
}

/** Why a connection is not the front proxy the API server uses, or undefined when it is. */
export function frontProxyProblem(
  peer: { authorized: boolean; authorizationError?: string; commonName?: string; clientAuth: boolean },
  cfg: RequestHeaderConfig,
): string | undefined {
  if (!peer.authorized)
    return `no client certificate signed by the requestheader CA (${peer.authorizationError ?? 'none presented'})`;
  if (!peer.clientAuth) return 'the client certificate is not for client authentication';
  if (cfg.allowedNames.length > 0 && !cfg.allowedNames.includes(peer.commonName ?? ''))
    return `the client certificate's name "${peer.commonName ?? ''}" is not an allowed front proxy (${cfg.allowedNames.join(', ')})`;
  return undefined;
}

function peerOf(socket: TLSSocket) {
  const cert = socket.getPeerCertificate?.();
  const usage = (cert as { ext_key_usage?: string[] } | undefined)?.ext_key_usage;
  return {
    authorized: socket.authorized === true,
    authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
    commonName: cert?.subject?.CN as string | undefined,
    // No extended key usage at all allows every use.
    clientAuth: !usage || usage.includes('1.3.6.1.5.5.7.3.2'),
  };
}

export interface SessionApiOptions {
  group: string;
  /** The current requestheader configuration; undefined while unknown. */
  config: () => RequestHeaderConfig | undefined;
  credentials: CredentialAuthority;
  /** Told of every token issued and every request refused. */
  onEvent?: (event: { issued?: Identity; refused?: string }) => void;
}

function send(res: http.ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason, message, code };
}

/** Serves the session API's paths; false for any other path (the caller answers those). */
export function handleSessionApi(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  o: SessionApiOptions,
): boolean {
  const url = (req.url ?? '').split('?')[0]!;
  const base = `/apis/${o.group}/${SESSION_API_VERSION}`;
  if (url === '/discovery/v2' || url.startsWith('/openapi/')) {
    // Only the legacy discovery document: the aggregator falls back to it on a 404.
    send(res, 404, status(404, 'NotFound', 'not served: see /apis/<group>/<version>'));
    return true;
  }
  if (url === base && req.method === 'GET') {
    send(res, 200, {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: `${o.group}/${SESSION_API_VERSION}`,
      resources: [
        {
          name: SESSION_TOKEN_RESOURCE,
          singularName: 'sessiontoken',
          namespaced: false,
          kind: SESSION_TOKEN_KIND,
          verbs: ['create'],
        },
      ],
    });
    return true;
  }
  if (url !== `${base}/${SESSION_TOKEN_RESOURCE}`) return false;
  if (req.method !== 'POST') {
    send(res, 405, status(405, 'MethodNotAllowed', `${SESSION_TOKEN_RESOURCE} can only be created`));
    return true;
  }
  const cfg = o.config();
  const problem = cfg
    ? frontProxyProblem(peerOf(req.socket as TLSSocket), cfg)
    : 'the traffic manager has not read kube-system/extension-apiserver-authentication (see its log)';
  const identity = cfg && !problem ? identityFromHeaders(req.headersDistinct, cfg) : undefined;
  // Drain the body: the request carries nothing the answer depends on.
  req.resume();
  if (problem || !identity) {
    const why = problem ?? 'the front proxy named no user';
    o.onEvent?.({ refused: why });
    send(
      res,
      401,
      status(
        401,
        'Unauthorized',
        `only the Kubernetes API server may create ${SESSION_TOKEN_RESOURCE}: ${why}`,
      ),
    );
    return true;
  }
  const { token, expiresAt } = o.credentials.issueIdentity(identity);
  o.onEvent?.({ issued: identity });
  send(res, 201, {
    apiVersion: `${o.group}/${SESSION_API_VERSION}`,
    kind: SESSION_TOKEN_KIND,
    metadata: { creationTimestamp: new Date().toISOString() },
    status: {
      token,
      expirationTimestamp: new Date(expiresAt).toISOString(),
      user: identity.user,
      groups: identity.groups,
    },
  });
  return true;
}
