// The user's access to the cluster as the root daemon gets it (rpc/daemon.proto ClusterAccess), so that it
// can open the port-forward to the traffic manager itself and the VIF's TCP flows cross no user daemon.
//
// The user daemon resolves the kubeconfig's current context as the user: files are read and an exec
// plugin or auth provider runs there, never as root (its cloud CLI's config and cache are the user's), and
// what goes to the root daemon is the result, inline: the API server, its CA, and a client certificate, a
// bearer token or a user name and password. No file paths. The user daemon sends it again when the
// credential changes (an exec plugin's token renewed: daemons/user/root-daemon-link.ts).
import type * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { ApiAccess } from './port-forward.js';

/** What ClusterAccess.kubeconfig holds (JSON). */
interface AccessDocument {
  server: string;
  /** PEM, base64 as in a kubeconfig's *-data fields. */
  caData?: string;
  certData?: string;
  keyData?: string;
  token?: string;
  username?: string;
  password?: string;
  skipTLSVerify?: boolean;
  tlsServerName?: string;
}

function base64(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) return base64(Buffer.concat(v.map((x) => Buffer.from(x as string))));
  return Buffer.from(v as string | Buffer).toString('base64');
}

/**
 * The current context's access, resolved as this process's user (the exec plugin runs now when its token
 * is not cached or has expired). Throws when the credential is one the root daemon could not use.
 */
export async function exportClusterAccess(kc: KubeConfig): Promise<string> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const opts: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  const doc: AccessDocument = { server: cluster.server };
  const ca = base64(opts.ca);
  const cert = base64(opts.cert);
  const key = base64(opts.key);
  if (ca) doc.caData = ca;
  if (cert) doc.certData = cert;
  if (key) doc.keyData = key;
  if (opts.rejectUnauthorized === false) doc.skipTLSVerify = true;
  if (opts.servername) doc.tlsServerName = opts.servername;
  const authorization = (opts.headers as Record<string, unknown> | undefined)?.Authorization;
  if (typeof authorization === 'string') {
    const bearer = /^Bearer (.+)$/i.exec(authorization);
    if (!bearer) throw new Error('the kubeconfig authenticates with a header other than a bearer token');
    doc.token = bearer[1]!;
  }
  if (opts.auth) {
    const at = opts.auth.indexOf(':');
    doc.username = opts.auth.slice(0, at < 0 ? undefined : at);
    doc.password = at < 0 ? '' : opts.auth.slice(at + 1);
  }
  return JSON.stringify(doc);
}

/**
 * The root daemon's side: the access as exportClusterAccess gave it, for its port-forward (kube/port-forward.ts
 * ApiAccess: no Kubernetes client is loaded); throws with what is wrong.
 */
export function importClusterAccess(text: string): ApiAccess {
  let doc: AccessDocument;
  try {
    doc = JSON.parse(text) as AccessDocument;
  } catch (e) {
    throw new Error(`the cluster access is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || typeof doc.server !== 'string')
    throw new Error('the cluster access names no API server');
  let url: URL;
  try {
    url = new URL(doc.server);
  } catch {
    throw new Error(`the cluster access's API server "${doc.server}" is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new Error(`the cluster access's API server "${doc.server}" is not an http(s) URL`);
  const field = (v: unknown, what: string): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new Error(`the cluster access's ${what} is not a string`);
    return v;
  };
  const pem = (v: unknown, what: string) => {
    const b = field(v, what);
    return b === undefined ? undefined : Buffer.from(b, 'base64');
  };
  const ca = pem(doc.caData, 'CA');
  const cert = pem(doc.certData, 'client certificate');
  const key = pem(doc.keyData, 'client key');
  const token = field(doc.token, 'token');
  const username = field(doc.username, 'user name');
  const password = field(doc.password, 'password') ?? '';
  const servername = field(doc.tlsServerName, 'TLS server name');
  const cluster = { server: doc.server };
  return {
    getCurrentCluster: () => cluster,
    applyToHTTPSOptions: async (opts) => {
      if (ca) opts.ca = ca;
      if (cert) opts.cert = cert;
      if (key) opts.key = key;
      if (doc.skipTLSVerify === true) opts.rejectUnauthorized = false;
      if (servername) opts.servername = servername;
      if (token) opts.headers = { ...opts.headers, Authorization: `Bearer ${token}` };
      if (username !== undefined) opts.auth = `${username}:${password}`;
    },
  };
}
