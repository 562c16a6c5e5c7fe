// The one place that parses ports, host:port pairs and CIDRs from flags, env and config.
import * as net from 'node:net';

/** A user-facing error: its message names the problem and the fix; the CLI prints it without a stack. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function parsePort(value: string, what = 'port'): number {
  const s = value.trim();
  if (!/^\d+$/.test(s)) throw new UsageError(`invalid ${what} "${value}": expected a number from 1 to 65535`);
  const n = Number(s);
  if (n < 1 || n > 65535)
    throw new UsageError(`invalid ${what} "${value}": expected a number from 1 to 65535`);
  return n;
}

/** A comma-separated list of ports, e.g. "8080,9090"; empty input gives []. */
export function parsePortList(value: string, what = 'port'): number[] {
  if (value.trim() === '') return [];
  const ports = value.split(',').map((p) => parsePort(p, what));
  const seen = new Set<number>();
  for (const p of ports) {
    if (seen.has(p)) throw new UsageError(`${what} ${p} is listed twice in "${value}"`);
    seen.add(p);
  }
  return ports;
}

export interface HostPort {
  host: string;
  port: number;
}

/** HOST:PORT or [IPv6]:PORT. */
export function parseHostPort(value: string, what = 'address'): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:[\]]+):(\d+)$/.exec(value);
  if (!m) throw new UsageError(`invalid ${what} "${value}": expected HOST:PORT, e.g. 127.0.0.1:8081`);
  return { host: m[1]!, port: parsePort(m[2]!, `${what} port`) };
}

/** HOST:PORT, an IPv6 host in brackets ([::1]:8081): what parseHostPort reads back. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export interface PortMapping {
  appPort: number;
  agentPort: number;
}

/** appPort:agentPort[,appPort:agentPort…] (the agent's TP_PORTS, tp.dev/ports); `what` names it in errors. */
export function parsePortMappings(value: string, what: string): PortMapping[] {
  if (value.trim() === '')
    throw new UsageError(
      `${what} is empty: expected appPort:agentPort[,appPort:agentPort…], e.g. 8080:15001`,
    );
  const out: PortMapping[] = [];
  for (const part of value.split(',')) {
    const m = /^\s*(\d+):(\d+)\s*$/.exec(part);
    if (!m)
      throw new UsageError(`invalid ${what} entry "${part}": expected appPort:agentPort, e.g. 8080:15001`);
    const appPort = parsePort(m[1]!, `${what} app port`);
    const agentPort = parsePort(m[2]!, `${what} agent port`);
    if (appPort === agentPort)
      throw new UsageError(`invalid ${what} entry "${part}": the agent port must differ from the app port`);
    out.push({ appPort, agentPort });
  }
  // Several app ports may share one agent port (the agent then reads SO_ORIGINAL_DST); each app port once.
  const apps = new Set(out.map((m) => m.appPort));
  if (apps.size !== out.length)
    throw new UsageError(`invalid ${what} "${value}": an app port is listed twice`);
  for (const m of out) {
    if (apps.has(m.agentPort)) {
      throw new UsageError(`invalid ${what} "${value}": agent port ${m.agentPort} collides with an app port`);
    }
  }
  return out;
}

/** The text parsePortMappings reads. */
export function formatPortMappings(ports: PortMapping[]): string {
  return ports.map((p) => `${p.appPort}:${p.agentPort}`).join(',');
}

export interface Cidr {
  family: 4 | 6;
  /** The network address, normalized (host bits cleared). */
  address: string;
  prefix: number;
  text: string;
}

function ipToBigInt(ip: string): { value: bigint; family: 4 | 6 } {
  if (net.isIPv4(ip)) {
    return { value: ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n), family: 4 };
  }
  if (net.isIPv6(ip)) {
    let s = ip;
    const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
    if (v4) {
      const n = ipToBigInt(v4[1]!).value;
      s = `${s.slice(0, -v4[1]!.length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
    }
    const [head, tail] = s.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    return { value: groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n), family: 6 };
  }
  throw new UsageError(`invalid IP address "${ip}"`);
}

function bigIntToIp(value: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => Number((value >> s) & 0xffn)).join('.');
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
  // Canonical form: compress the longest run of zero groups.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function parseCidr(value: string, what = 'CIDR'): Cidr {
  const m = /^([^/]+)\/(\d+)$/.exec(value.trim());
  const bad = () => new UsageError(`invalid ${what} "${value}": expected ADDRESS/PREFIX, e.g. 10.96.0.0/12`);
  if (!m || !net.isIP(m[1]!)) throw bad();
  const { value: ip, family } = ipToBigInt(m[1]!);
  const prefix = Number(m[2]);
  const bits = family === 4 ? 32 : 128;
  if (prefix > bits) throw bad();
  const mask = prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
  const address = bigIntToIp(ip & mask, family);
  return { family, address, prefix, text: `${address}/${prefix}` };
}

function range(c: Cidr): [bigint, bigint] {
  const bits = c.family === 4 ? 32 : 128;
  const start = ipToBigInt(c.address).value;
  return [start, start + (1n << BigInt(bits - c.prefix)) - 1n];
}

export function cidrContains(c: Cidr, ip: string): boolean {
  if (!net.isIP(ip)) return false;
  const v = ipToBigInt(ip);
  if (v.family !== c.family) return false;
  const [lo, hi] = range(c);
  return v.value >= lo && v.value <= hi;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const [alo, ahi] = range(a);
  const [blo, bhi] = range(b);
  return alo <= bhi && blo <= ahi;
}

/** The address as network-order bytes: 4 for IPv4, 16 for IPv6 (packet code compares and copies these). */
export function ipToBytes(ip: string): Buffer {
  const { value, family } = ipToBigInt(ip);
  const out = Buffer.alloc(family === 4 ? 4 : 16);
  let v = value;
  for (let i = out.length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** The canonical text of a 4- or 16-byte address (IPv6 with the longest zero run compressed). */
export function bytesToIp(bytes: Uint8Array): string {
  if (bytes.length !== 4 && bytes.length !== 16)
    throw new RangeError(`an address has 4 or 16 bytes, not ${bytes.length}`);
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return bigIntToIp(v, bytes.length === 4 ? 4 : 6);
}

/** The address at offset n from the start of the CIDR (n = 1: the first host address of 10.0.0.0/24). */
export function cidrAddress(c: Cidr, n: number): string {
  const [lo, hi] = range(c);
  const v = lo + BigInt(n);
  if (n < 0 || v > hi) throw new RangeError(`${c.text} has no address at offset ${n}`);
  return bigIntToIp(v, c.family);
}

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration flag such as 15s, 500ms, 2m or 1m30s, in milliseconds. */
export function parseDuration(value: string, what = 'duration'): number {
  const s = value.trim();
  const bad = () =>
    new UsageError(`invalid ${what} "${value}": expected a duration such as 15s, 500ms or 2m`);
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) throw bad();
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * durationUnits[m[2]!]!;
  if (total <= 0) throw bad();
  return Math.round(total);
}
