// **Pure**: the kubelet's probe semantics, as the agent reproduces them when it performs an app's original
// probe (probe-checks.ts does the I/O): the request an httpGet probe sends, which answers count as success,
// which redirects are followed, and how long a probe may take.
//
// The facts, from the kubelet (pkg/probe/http, pkg/probe/grpc): the URL is scheme://podIP:port/path; the
// headers are the probe's httpHeaders, plus `User-Agent: kube-probe/<major.minor>` and `Accept: */*` unless
// the probe sets them (an empty Accept removes it); a Host header in httpHeaders replaces the URL's host;
// 200 <= status < 400 is success; redirects (301, 302, 303, 307, 308) are followed while they stay on the
// same host name, at most 10 requests in all, and a redirect to another host ends the probe with that 3xx
// answer (a success with a warning); at most 10 KiB of the body is read; HTTPS certificates are not
// verified; gRPC success is SERVING only.
import { formatHostPort } from '../netaddr/parse.js';
import type { ProbeHeader } from '../probes/spec.js';

/** The kubelet stops at the tenth request of a redirect chain ("stopped after 10 redirects"). */
export const MAX_PROBE_REQUESTS = 10;
/** The kubelet reads at most this much of an HTTP probe's body. */
export const MAX_PROBE_BODY_BYTES = 10 * 1024;
/**
 * The User-Agent when the probe request did not come from a kubelet (e.g. curl by hand); the kubelet's own
 * `kube-probe/<major.minor>` is passed on as it came.
 */
export const FALLBACK_USER_AGENT = 'kube-probe/1.34';

/** Whether an HTTP probe's final status is a success. */
export function httpProbeSucceeds(status: number): boolean {
  return status >= 200 && status < 400;
}

/**
 * How long the agent gives the original probe: a little less than the kubelet's own timeout, so that the
 * kubelet reads the agent's 503 and its reason instead of timing out itself.
 */
export function probeBudgetMs(timeoutSeconds: number): number {
  const ms = timeoutSeconds * 1000;
  return ms - Math.min(200, ms / 5);
}

/** The User-Agent to send: the kubelet's (it asked for this probe), else a stand-in of the same form. */
export function probeUserAgent(incoming: string | undefined): string {
  return incoming?.startsWith('kube-probe/') ? incoming : FALLBACK_USER_AGENT;
}

/** As Go's http.Header canonicalizes names (x-custom-header -> X-Custom-Header). */
export function canonicalHeaderName(name: string): string {
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) return name;
  return name
    .split('-')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase())
    .join('-');
}

export interface ProbeRequest {
  /** Where the kubelet would send the probe: scheme://podIP:port/path. */
  url: URL;
  /** The Host header: the probe's own, else the URL's host:port. */
  host: string;
  /** The other headers, in order, as name/value pairs (a name may repeat). */
  headers: [string, string][];
}

/** The first request of an httpGet probe, as the kubelet would send it to the pod. */
export function probeRequest(
  httpGet: { scheme: 'HTTP' | 'HTTPS'; port: number; path: string; httpHeaders: ProbeHeader[] },
  podIp: string,
  userAgent: string,
): ProbeRequest {
  const url = new URL(
    `${httpGet.scheme.toLowerCase()}://${formatHostPort(podIp, httpGet.port)}${httpGet.path || '/'}`,
  );
  const given = httpGet.httpHeaders.map((h): [string, string] => [canonicalHeaderName(h.name), h.value]);
  const has = (name: string) => given.some(([n]) => n === name);
  const first = (name: string) => given.find(([n]) => n === name)?.[1];
  const headers: [string, string][] = [];
  const agent = has('User-Agent') ? first('User-Agent')! : userAgent;
  if (agent !== '') headers.push(['User-Agent', agent]);
  const emptyAccept = has('Accept') && first('Accept') === '';
  for (const [n, v] of given) {
    if (n === 'Host' || n === 'User-Agent' || (n === 'Accept' && emptyAccept)) continue;
    headers.push([n, v]);
  }
  if (!has('Accept')) headers.push(['Accept', '*/*']);
  return { url, host: first('Host') || url.host, headers };
}

export type RedirectStep =
  /** Not a redirect to follow: this answer is the probe's result. */
  | { follow: false }
  | { follow: true; url: URL; host: string }
  /** The probe fails with this reason. */
  | { follow: false; failure: string };

const FOLLOWED = new Set([301, 302, 303, 307, 308]);

/**
 * What the kubelet does with an answer: follow a redirect (where to, with which Host header), stop there,
 * or fail. `requests` is how many requests the chain has made so far, this one included.
 */
export function redirectStep(
  status: number,
  location: string | undefined,
  current: ProbeRequest,
  first: ProbeRequest,
  requests: number,
): RedirectStep {
  if (!FOLLOWED.has(status) || !location) return { follow: false };
  let next: URL;
  try {
    next = new URL(location, current.url);
  } catch {
    return { follow: false, failure: `the redirect's Location "${location}" is not a URL` };
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:')
    return { follow: false, failure: `redirect to ${next.href}: unsupported protocol scheme` };
  // Another host: the kubelet keeps the 3xx answer, a success.
  if (next.hostname !== first.url.hostname) return { follow: false };
  if (requests >= MAX_PROBE_REQUESTS)
    return { follow: false, failure: `stopped after ${MAX_PROBE_REQUESTS} redirects` };
  // A Host header of the probe's own survives a relative redirect only (as Go's client does).
  const relative = !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(location);
  const keepHost = first.host !== first.url.host && relative;
  return { follow: true, url: next, host: keepHost ? first.host : next.host };
}
