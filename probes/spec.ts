// The contract between the injector, which rewrites an app container's kubelet probes to the agent's
// probe port, and the agent, which performs the original probes against the app on loopback: the
// original probes (the agent's TP_PROBES, JSON) and the paths the kubelet asks on the probe port.
// Pure, and imported by both sides (kube/ and agent/), so the encoder and the decoder cannot drift apart.
import { UsageError } from '../netaddr/parse.js';

export const PROBE_KINDS = ['readiness', 'liveness', 'startup'] as const;
export type ProbeKind = (typeof PROBE_KINDS)[number];

export interface ProbeHeader {
  name: string;
  value: string;
}

/** The original handler, as the kubelet would run it, with its port resolved to a number. */
export type ProbeHandler =
  | { httpGet: { port: number; scheme: 'HTTP' | 'HTTPS'; path: string; httpHeaders: ProbeHeader[] } }
  | { tcpSocket: { port: number } }
  | { grpc: { port: number; service: string } };

/** One rewritten probe: whose it is, the original's timeout, and what the agent performs instead. */
export type AppProbe = {
  container: string;
  kind: ProbeKind;
  /** The original probe's timeoutSeconds (the API's default is 1). */
  timeoutSeconds: number;
} & ProbeHandler;

/** Every path the probe server answers starts with this. */
export const PROBE_PATH_PREFIX = '/tp-probe/';
/** The agent's own readiness: 200 once its listeners are up. */
export const AGENT_PROBE_PATH = `${PROBE_PATH_PREFIX}agent`;

/** The path on the probe port that stands for one of a container's probes. */
export function probePath(container: string, kind: ProbeKind): string {
  return `${PROBE_PATH_PREFIX}${container}/${kind}`;
}

export type ProbeTarget = { agent: true } | { agent: false; container: string; kind: ProbeKind };

/** What a request path on the probe port asks for (a query string is ignored), or undefined. */
export function parseProbePath(path: string): ProbeTarget | undefined {
  const bare = path.split('?', 1)[0]!;
  if (bare === AGENT_PROBE_PATH) return { agent: true };
  if (!bare.startsWith(PROBE_PATH_PREFIX)) return undefined;
  const parts = bare.slice(PROBE_PATH_PREFIX.length).split('/');
  if (parts.length !== 2 || parts[0] === '') return undefined;
  const kind = parts[1] as ProbeKind;
  if (!PROBE_KINDS.includes(kind)) return undefined;
  return { agent: false, container: parts[0]!, kind };
}

/** TP_PROBES: the probes as JSON, one array. */
export function encodeProbes(probes: AppProbe[]): string {
  return JSON.stringify(probes);
}

/** Reads TP_PROBES back; a malformed value fails naming the variable and the entry. */
export function decodeProbes(text: string | undefined, what: string): AppProbe[] {
  if (text === undefined || text.trim() === '') return [];
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${what} is not JSON (${(e as Error).message}): the injector writes it`);
  }
  if (!Array.isArray(raw)) throw new UsageError(`${what} is not a JSON array of probes`);
  const seen = new Set<string>();
  return raw.map((entry: unknown, i) => {
    const probe = decodeProbe(entry, `${what}[${i}]`);
    const key = `${probe.container}/${probe.kind}`;
    if (seen.has(key)) throw new UsageError(`${what} lists ${key} twice`);
    seen.add(key);
    return probe;
  });
}

type Fields = Record<string, unknown>;

function decodeProbe(entry: unknown, where: string): AppProbe {
  const e = object(entry, where);
  const container = e.container;
  if (typeof container !== 'string' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(container))
    throw new UsageError(`${where}.container is not a container name`);
  const kind = e.kind as ProbeKind;
  if (!PROBE_KINDS.includes(kind))
    throw new UsageError(`${where}.kind is not one of ${PROBE_KINDS.join(', ')}`);
  const timeoutSeconds = e.timeoutSeconds;
  if (typeof timeoutSeconds !== 'number' || !Number.isInteger(timeoutSeconds) || timeoutSeconds < 1)
    throw new UsageError(`${where}.timeoutSeconds is not a whole number of seconds (1 or more)`);
  const base = { container, kind, timeoutSeconds };
  if (e.httpGet !== undefined) {
    const h = object(e.httpGet, `${where}.httpGet`);
    const scheme = h.scheme;
    if (scheme !== 'HTTP' && scheme !== 'HTTPS')
      throw new UsageError(`${where}.httpGet.scheme is neither HTTP nor HTTPS`);
    if (typeof h.path !== 'string') throw new UsageError(`${where}.httpGet.path is not a string`);
    if (!Array.isArray(h.httpHeaders)) throw new UsageError(`${where}.httpGet.httpHeaders is not a list`);
    const httpHeaders = h.httpHeaders.map((x: unknown, j) => {
      const header = object(x, `${where}.httpGet.httpHeaders[${j}]`);
      if (typeof header.name !== 'string' || header.name === '' || typeof header.value !== 'string')
        throw new UsageError(`${where}.httpGet.httpHeaders[${j}] is not {name, value}`);
      return { name: header.name, value: header.value };
    });
    return {
      ...base,
      httpGet: { port: port(h.port, `${where}.httpGet`), scheme, path: h.path, httpHeaders },
    };
  }
  if (e.tcpSocket !== undefined) {
    const t = object(e.tcpSocket, `${where}.tcpSocket`);
    return { ...base, tcpSocket: { port: port(t.port, `${where}.tcpSocket`) } };
  }
  if (e.grpc !== undefined) {
    const g = object(e.grpc, `${where}.grpc`);
    if (typeof g.service !== 'string') throw new UsageError(`${where}.grpc.service is not a string`);
    return { ...base, grpc: { port: port(g.port, `${where}.grpc`), service: g.service } };
  }
  throw new UsageError(`${where} has no httpGet, tcpSocket or grpc`);
}

function object(value: unknown, where: string): Fields {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new UsageError(`${where} is not an object`);
  return value as Fields;
}

function port(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535)
    throw new UsageError(`${where}.port is not a port number from 1 to 65535`);
  return value;
}
