// The workstation's side of the session API (session-api.ts): create a SessionToken through the Kubernetes
// API server with the kubeconfig's own credentials, whatever kind they are, and get back the identity
// token the user daemon presents when it arrives at the traffic manager. The user's credentials go to the
// API server only, as with any kubectl command.
import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { UsageError } from '../netaddr/parse.js';
import {
  SESSION_API_VERSION,
  SESSION_TOKEN_KIND,
  SESSION_TOKEN_RESOURCE,
  sessionApiGroup,
} from './annotations.js';

const REQUEST_TIMEOUT_MS = 15_000;

/** The message of a Kubernetes Status body, or the body itself. */
function statusMessage(body: string): string {
  try {
    return (JSON.parse(body) as { message?: string }).message ?? body.trim();
  } catch {
    return body.trim();
  }
}

/** What the user reads when the API server refuses: the problem and the fix. */
export function explainRefusal(
  code: number,
  message: string,
  group: string,
  managerNamespace: string,
): string {
  const what = `cannot get a tp session token from the Kubernetes API server (HTTP ${code}: ${message})`;
  switch (code) {
    case 401:
      return `${what}: the API server did not accept your kubeconfig's credentials, or the traffic manager did not trust the API server; check kubectl works, then the manager's log (kubectl -n ${managerNamespace} logs deploy/traffic-manager)`;
    case 403:
      return `${what}: your user may not create ${SESSION_TOKEN_RESOURCE}.${group}; ask an admin to add you to the tp chart's value clients.subjects (ClusterRole tp-client-${managerNamespace})`;
    case 404:
      return `${what}: the API ${group}/${SESSION_API_VERSION} is not registered; install or upgrade the traffic manager with this tp's chart (tp helm upgrade -n ${managerNamespace})`;
    case 503:
      return `${what}: the traffic manager does not answer the API server; is it running? (kubectl -n ${managerNamespace} get pods)`;
    default:
      return what;
  }
}

/** How long a token request waits out "service unavailable" (a manager starting or restarting). */
const UNAVAILABLE_RETRY_MS = 30_000;

/**
 * An identity token for the kubeconfig's user, from the traffic manager in managerNamespace. While the API
 * server answers 503 (the manager is starting: its APIService is not Available yet) it asks again, for up
 * to 30 s.
 */
export async function requestIdentityToken(kc: KubeConfig, managerNamespace: string): Promise<string> {
  const until = Date.now() + UNAVAILABLE_RETRY_MS;
  for (;;) {
    try {
      return await requestOnce(kc, managerNamespace);
    } catch (e) {
      if (!(e instanceof Unavailable) || Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

class Unavailable extends Error {}

async function requestOnce(kc: KubeConfig, managerNamespace: string): Promise<string> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new UsageError('the kubeconfig has no current cluster: pass --context');
  const group = sessionApiGroup(managerNamespace);
  const url = new URL(`/apis/${group}/${SESSION_API_VERSION}/${SESSION_TOKEN_RESOURCE}`, cluster.server);
  const body = JSON.stringify({
    apiVersion: `${group}/${SESSION_API_VERSION}`,
    kind: SESSION_TOKEN_KIND,
    metadata: {},
    spec: {},
  });
  const opts: https.RequestOptions = {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    timeout: REQUEST_TIMEOUT_MS,
  };
  // Client certificates, bearer tokens, exec and auth-provider plugins: as the kubeconfig says.
  await kc.applyToHTTPSOptions(opts);
  const { code, text } = await new Promise<{ code: number; text: string }>((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request(url, opts, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        data += d;
      });
      res.on('end', () => resolve({ code: res.statusCode ?? 0, text: data }));
      res.on('error', reject);
    });
    req.on('timeout', () =>
      req.destroy(new Error(`the API server did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`)),
    );
    req.on('error', (e) =>
      reject(new Error(`cannot reach the Kubernetes API server at ${cluster.server}: ${e.message}`)),
    );
    req.end(body);
  });
  if (code === 503) throw new Unavailable(explainRefusal(code, statusMessage(text), group, managerNamespace));
  if (code !== 201 && code !== 200)
    throw new Error(explainRefusal(code, statusMessage(text), group, managerNamespace));
  const token = (JSON.parse(text) as { status?: { token?: string } }).status?.token;
  if (!token) throw new Error(`the ${SESSION_TOKEN_KIND} the API server returned holds no token`);
  return token;
}
