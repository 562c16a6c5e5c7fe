// DNS lookups for workstations, answered by the cluster's own resolver (the kube-dns Service), so a
// name resolves on the workstation exactly as it does in a pod. A and AAAA go through Node's resolver
// (c-ares) and come back as addresses with their TTL; any other type is forwarded as a raw query and
// the answer returned in wire format, so the workstation's resolver can relay it as it is.
import * as dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';

export interface DnsAnswer {
  /** 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED. */
  rcode: number;
  ips: string[];
  ttlSeconds: number;
  raw: Buffer;
}

const RCODE_BY_ERROR: Record<string, number> = {
  ENODATA: 0,
  ENOTFOUND: 3,
  ESERVFAIL: 2,
  EREFUSED: 5,
  ETIMEOUT: 2,
  ECONNREFUSED: 2,
  EFORMERR: 1,
  ENOTIMP: 4,
};

/** The TTL the workstation caches a negative answer for. */
const NEGATIVE_TTL_SECONDS = 5;

/** A DNS query in wire format: one question, recursion desired. */
export function encodeQuery(id: number, name: string, qtype: number): Buffer {
  const labels = name
    .replace(/\.$/, '')
    .split('.')
    .filter((l) => l !== '');
  const parts: Buffer[] = [];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id & 0xffff, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  parts.push(header);
  for (const l of labels) {
    const b = Buffer.from(l, 'utf8');
    if (b.length > 63) throw new Error(`DNS label "${l}" is longer than 63 bytes`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(qtype, 0);
  tail.writeUInt16BE(1, 2); // IN
  parts.push(tail);
  return Buffer.concat(parts);
}

export class ClusterResolver {
  private readonly resolver: Resolver;
  private nextId = 1;

  constructor(
    private readonly servers: string[],
    private readonly timeoutMs = 2000,
  ) {
    this.resolver = new Resolver({ timeout: timeoutMs, tries: 2 });
    if (servers.length > 0) this.resolver.setServers(servers);
  }

  async lookup(name: string, qtype: number): Promise<DnsAnswer> {
    if (qtype === 1 || qtype === 28) {
      try {
        const records =
          qtype === 1
            ? await this.resolver.resolve4(name, { ttl: true })
            : await this.resolver.resolve6(name, { ttl: true });
        const ttl = records.length ? Math.min(...records.map((r) => r.ttl)) : NEGATIVE_TTL_SECONDS;
        return { rcode: 0, ips: records.map((r) => r.address), ttlSeconds: ttl, raw: Buffer.alloc(0) };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        return {
          rcode: RCODE_BY_ERROR[code] ?? 2,
          ips: [],
          ttlSeconds: NEGATIVE_TTL_SECONDS,
          raw: Buffer.alloc(0),
        };
      }
    }
    return this.forward(name, qtype);
  }

  /** Sends the query to the first server over UDP and returns the answer as it came. */
  private forward(name: string, qtype: number): Promise<DnsAnswer> {
    const first = this.servers[0];
    if (!first)
      return Promise.resolve({ rcode: 2, ips: [], ttlSeconds: NEGATIVE_TTL_SECONDS, raw: Buffer.alloc(0) });
    // "IP", "IP:PORT" or "[IPv6]:PORT", as Resolver.setServers takes them.
    const m = /^\[(.+)\]:(\d+)$/.exec(first) ?? /^([^:]+):(\d+)$/.exec(first);
    const server = m ? m[1]! : first;
    const port = m ? Number(m[2]) : 53;
    const id = this.nextId++ & 0xffff;
    const query = encodeQuery(id, name, qtype);
    return new Promise((resolve) => {
      const socket = dgram.createSocket(server.includes(':') ? 'udp6' : 'udp4');
      const done = (answer: DnsAnswer) => {
        clearTimeout(timer);
        socket.close();
        resolve(answer);
      };
      const timer = setTimeout(
        () => done({ rcode: 2, ips: [], ttlSeconds: NEGATIVE_TTL_SECONDS, raw: Buffer.alloc(0) }),
        this.timeoutMs,
      );
      socket.on('message', (msg) => {
        if (msg.length < 12 || msg.readUInt16BE(0) !== id) return;
        done({ rcode: msg.readUInt16BE(2) & 0xf, ips: [], ttlSeconds: 0, raw: msg });
      });
      socket.on('error', () =>
        done({ rcode: 2, ips: [], ttlSeconds: NEGATIVE_TTL_SECONDS, raw: Buffer.alloc(0) }),
      );
      socket.send(query, port, server);
    });
  }
}
