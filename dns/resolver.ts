// tp's DNS server on the VIF's address (UDP and TCP port 53). Cluster names are answered through the
// traffic manager (which asks the cluster's DNS) and cached briefly; every other query is forwarded,
// byte for byte, to the resolvers the workstation had.
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import type { Logger } from '../logging/logger.js';
import { TtlCache } from './cache.js';
import { type ClusterDnsScope, clusterNameFor } from './cluster-names.js';
import { forwardQuery, type Upstream } from './forwarder.js';
import {
  addressRecord,
  buildResponse,
  canonicalName,
  DnsFormatError,
  type DnsMessage,
  type DnsRecord,
  decodeMessage,
  encodeMessage,
  flags,
  RCODE,
  TYPE,
  truncated,
  udpPayloadLimit,
} from './wire.js';

/** What the cluster's DNS said (the fields of rpc DNSResponse). */
export interface ClusterAnswer {
  rcode: number;
  ips: string[];
  ttlSeconds: number;
  /** The whole answer in wire format, for types other than A/AAAA (may be empty). */
  raw: Uint8Array;
}

export interface ClusterLookup {
  lookup(fqdn: string, qtype: number): Promise<ClusterAnswer>;
}

export interface ResolverOptions {
  /** Addresses to serve on (port 53 unless a test says otherwise). */
  listen: { address: string; port: number }[];
  scope: () => ClusterDnsScope;
  cluster: ClusterLookup;
  /** Where other names go: the workstation's original resolvers. */
  upstream: () => Upstream[];
  log: Logger;
  /** Cap of a cached cluster answer's life. */
  maxTtlMs?: number;
  /** Life of a cached "no such name". */
  negativeTtlMs?: number;
  /** How long an expired cluster answer may still be given when the cluster cannot be asked (STALE_MS). */
  staleMs?: number;
  /** How long a query with an expired answer at hand waits for the cluster before it gets that (STALE_AFTER_MS). */
  staleAfterMs?: number;
  /** How long after a failed refresh an expired answer is given at once (FAILURE_RECHECK_MS). */
  failureRecheckMs?: number;
}

/**
 * How long past its TTL a cluster answer is kept for when the traffic manager cannot be asked (serve-stale,
 * RFC 8767: dns/cache.ts). Long enough for a manager restart on a slow node; short beside the days the RFC
 * allows, because the cluster's addresses change as pods move.
 */
export const STALE_MS = 5 * 60_000;

/**
 * RFC 8767's client response timer (it suggests 1.8 s): a query whose expired answer is at hand waits this
 * long for the cluster, then gets the expired one while the lookup goes on. Under a stub resolver's and
 * most clients' timeouts (curl -m 3 in the fault suite).
 */
export const STALE_AFTER_MS = 1_000;

/**
 * RFC 8767's failure recheck timer (it suggests 30 s): once a lookup to refresh a name failed, its expired
 * answer is given at once for this long (a lookup still goes on behind it: dns/cache.ts). Without it every
 * new lookup made its first query wait STALE_AFTER_MS again: in the fault suite, across an API server
 * restart, one request in four seconds failed with curl exit 6, the lab's glibc (`options timeout:1`)
 * giving up just as the expired answer came.
 */
export const FAILURE_RECHECK_MS = 30_000;

export interface ResolverStats {
  queries: number;
  clusterQueries: number;
  forwarded: number;
  failures: number;
  /** Cluster queries answered from an expired answer because the lookup failed. */
  staleAnswers: number;
}

const TCP_IDLE_MS = 10_000;

export class DnsResolver {
  readonly stats: ResolverStats = {
    queries: 0,
    clusterQueries: 0,
    forwarded: 0,
    failures: 0,
    staleAnswers: 0,
  };
  private readonly cache: TtlCache<ClusterAnswer>;
  private readonly udp: dgram.Socket[] = [];
  private readonly tcp: net.Server[] = [];
  private readonly connections = new Set<net.Socket>();

  constructor(private readonly o: ResolverOptions) {
    this.cache = new TtlCache({
      maxTtlMs: o.maxTtlMs ?? 30_000,
      maxEntries: 4096,
      staleMs: o.staleMs ?? STALE_MS,
      staleAfterMs: o.staleAfterMs ?? STALE_AFTER_MS,
      failureRecheckMs: o.failureRecheckMs ?? FAILURE_RECHECK_MS,
    });
  }

  /** Binds every listen address (UDP and TCP); on failure nothing stays bound. */
  async start(): Promise<void> {
    try {
      for (const l of this.o.listen) {
        const type = l.address.includes(':') ? 'udp6' : 'udp4';
        // reuseAddr: a resolver bound to the wildcard address with SO_REUSEADDR (dnsmasq) may share port 53.
        const socket = dgram.createSocket({ type, reuseAddr: true });
        this.udp.push(socket);
        await new Promise<void>((resolve, reject) => {
          socket.once('error', reject);
          socket.bind(l.port, l.address, () => {
            socket.off('error', reject);
            resolve();
          });
        });
        socket.on('error', (e) => this.o.log.warn('DNS socket error', { error: e.message }));
        socket.on('message', (query, rinfo) => this.onUdp(socket, query, rinfo));
        const server = net.createServer((c) => this.onTcp(c));
        this.tcp.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: l.address, port: l.port }, () => {
            server.off('error', reject);
            resolve();
          });
        });
      }
    } catch (e) {
      this.stop();
      const err = e as NodeJS.ErrnoException;
      throw new Error(
        `cannot serve DNS on the VIF: ${err.code === 'EADDRINUSE' ? 'port 53 is in use' : err.message}`,
      );
    }
  }

  stop(): void {
    for (const s of this.udp) s.close();
    for (const s of this.tcp) s.close();
    for (const c of this.connections) c.destroy();
    this.udp.length = 0;
    this.tcp.length = 0;
    this.cache.clear();
  }

  /** Forget cached cluster answers (the cluster changed, or the session did). */
  flush(): void {
    this.cache.clear();
  }

  private onUdp(socket: dgram.Socket, query: Buffer, rinfo: dgram.RemoteInfo): void {
    void this.answer(query, 'udp').then((response) => {
      // The answer may come after stop() closed the socket (a lookup waiting for the manager).
      if (!response || !this.udp.includes(socket)) return;
      socket.send(response, rinfo.port, rinfo.address, (e) => {
        if (e) this.o.log.debug('cannot send a DNS answer', { error: e.message });
      });
    });
  }

  private onTcp(c: net.Socket): void {
    this.connections.add(c);
    c.setTimeout(TCP_IDLE_MS, () => c.destroy());
    c.on('close', () => this.connections.delete(c));
    c.on('error', () => {});
    let pending: Buffer = Buffer.alloc(0);
    c.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 2) {
        const len = pending.readUInt16BE(0);
        if (pending.length < 2 + len) break;
        const query = Buffer.from(pending.subarray(2, 2 + len));
        pending = pending.subarray(2 + len);
        void this.answer(query, 'tcp').then((response) => {
          if (!response || c.destroyed) return;
          const frame = Buffer.alloc(2);
          frame.writeUInt16BE(response.length);
          c.write(Buffer.concat([frame, response]));
        });
      }
    });
  }

  /** The response to one query in wire format; undefined when it deserves none (not a query at all). */
  async answer(raw: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    this.stats.queries++;
    let query: DnsMessage;
    try {
      query = decodeMessage(raw);
    } catch (e) {
      if (!(e instanceof DnsFormatError) || raw.length < 12) return undefined;
      return encodeMessage(headerOnlyResponse(raw, RCODE.FORMERR));
    }
    if (flags.isResponse(query.flags)) return undefined;
    if (flags.opcode(query.flags) !== 0) return encodeMessage(buildResponse(query, RCODE.NOTIMP, []));
    if (query.questions.length !== 1) return encodeMessage(buildResponse(query, RCODE.FORMERR, []));
    const q = query.questions[0]!;
    const cluster = clusterNameFor(q.name, this.o.scope());
    if (cluster) {
      this.stats.clusterQueries++;
      let answer: ClusterAnswer;
      let remainingMs: number;
      let stale: boolean | undefined;
      try {
        ({
          value: answer,
          remainingMs,
          stale,
        } = await this.cache.getOrLoad(`${q.type} ${cluster.fqdn}`, async () => {
          const a = await this.o.cluster.lookup(cluster.fqdn, q.type);
          // No DNS server in the cluster answered (CoreDNS unready, say during an API server restart): a
          // failed lookup, so an expired answer is given instead (serve-stale), and nothing is cached.
          if (a.rcode === RCODE.SERVFAIL) throw new Error("the cluster's DNS did not answer (SERVFAIL)");
          const ttlMs =
            a.rcode === RCODE.NXDOMAIN ? (this.o.negativeTtlMs ?? 5_000) : Math.max(1, a.ttlSeconds) * 1000;
          return { value: a, ttlMs };
        }));
      } catch (e) {
        this.stats.failures++;
        this.o.log.warn('cluster DNS lookup failed', { name: cluster.fqdn, error: (e as Error).message });
        return encodeMessage(buildResponse(query, RCODE.SERVFAIL, []));
      }
      if (stale) {
        this.stats.staleAnswers++;
        this.o.log.debug('the cluster cannot be asked: an expired answer given', { name: cluster.fqdn });
      }
      if (!(answer.rcode === RCODE.NXDOMAIN && cluster.fallThrough)) {
        const response = clusterResponse(query, cluster.fqdn, answer, Math.ceil(remainingMs / 1000));
        return this.fit(response, query, transport);
      }
      // A single-label name the cluster does not know: maybe a host on the local network.
    }
    this.stats.forwarded++;
    const upstream = this.o.upstream();
    if (upstream.length === 0) return encodeMessage(buildResponse(query, RCODE.SERVFAIL, []));
    try {
      return await forwardQuery(raw, query.id, upstream, transport);
    } catch (e) {
      this.stats.failures++;
      this.o.log.debug('forwarding a query failed', { name: q.name, error: (e as Error).message });
      return encodeMessage(buildResponse(query, RCODE.SERVFAIL, []));
    }
  }

  private fit(response: DnsMessage, query: DnsMessage, transport: 'udp' | 'tcp'): Buffer {
    const bytes = encodeMessage(response);
    if (transport === 'udp' && bytes.length > udpPayloadLimit(query))
      return encodeMessage(truncated(response));
    return bytes;
  }
}

/**
 * The answer to `query` from the cluster's answer for the fully qualified name. The records carry the
 * name the client asked (a single-label "echo" is answered as "echo", not as echo.default.svc…).
 */
export function clusterResponse(
  query: DnsMessage,
  fqdn: string,
  a: ClusterAnswer,
  ttlSeconds: number,
): DnsMessage {
  const q = query.questions[0]!;
  const ttl = Math.max(0, ttlSeconds);
  if (q.type === TYPE.A || q.type === TYPE.AAAA) {
    const want = q.type === TYPE.A ? 4 : 6;
    const records = a.ips.filter((ip) => net.isIP(ip) === want).map((ip) => addressRecord(q.name, ip, ttl));
    return buildResponse(query, a.rcode, a.rcode === RCODE.NOERROR ? records : [], { authoritative: true });
  }
  if (a.raw.length > 0) {
    try {
      const m = decodeMessage(Buffer.from(a.raw));
      const rename = (r: DnsRecord): DnsRecord =>
        canonicalName(r.name) === fqdn
          ? { ...r, name: q.name, ttl: Math.min(r.ttl, ttl) }
          : { ...r, ttl: Math.min(r.ttl, ttl) };
      return buildResponse(query, flags.rcode(m.flags), m.answers.map(rename), {
        authoritative: true,
        authorities: m.authorities.map(rename),
      });
    } catch {
      // A raw answer we cannot read is as good as none.
    }
  }
  return buildResponse(query, a.rcode, [], { authoritative: true });
}

function headerOnlyResponse(raw: Buffer, rcode: number): DnsMessage {
  return {
    id: raw.readUInt16BE(0),
    flags: 0x8000 | (raw.readUInt16BE(2) & 0x0100) | 0x0080 | rcode,
    questions: [],
    answers: [],
    authorities: [],
    additionals: [],
  };
}
