// The manager's half of LookupDNS: ask the cluster's DNS (the nameservers of the manager's own
// resolv.conf: in a pod, the cluster DNS service) one question, and return what it said in the shape of
// rpc DNSResponse. A real DNS query, not getaddrinfo: the rcode (NXDOMAIN vs. no records of that type),
// the TTL and the other record types (SRV, TXT, PTR…) all reach the workstation as the cluster gave them.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { forwardQuery, type Upstream } from './forwarder.js';
import { parseResolvConf } from './resolv-conf.js';
import { buildQuery, canonicalName, decodeMessage, flags, recordAddress, TYPE } from './wire.js';

export interface ClusterDnsAnswer {
  rcode: number;
  ips: string[];
  ttlSeconds: number;
  raw: Buffer;
}

/** TTL of answers without one (negative answers without a SOA). */
const DEFAULT_TTL_SECONDS = 5;

/** The nameservers of a resolv.conf (default /etc/resolv.conf), port 53. */
export function systemNameservers(path = '/etc/resolv.conf'): Upstream[] {
  let text = '';
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch {
    // No resolv.conf: glibc then uses the local host.
  }
  const servers = parseResolvConf(text).nameservers;
  return (servers.length > 0 ? servers : ['127.0.0.1']).map((address) => ({ address, port: 53 }));
}

/**
 * Asks `servers` for name (fully qualified; a trailing dot is added if missing) and type. UDP first, TCP
 * when the answer is truncated. Throws when no server answers.
 */
export async function lookupInCluster(
  name: string,
  qtype: number,
  servers: Upstream[] = systemNameservers(),
): Promise<ClusterDnsAnswer> {
  const fqdn = canonicalName(name);
  const id = crypto.randomInt(0, 0x10000);
  const query = buildQuery(id, fqdn, qtype);
  let raw = await forwardQuery(query, id, servers, 'udp');
  if (flags.truncated(raw.readUInt16BE(2))) raw = await forwardQuery(query, id, servers, 'tcp');
  const m = decodeMessage(raw);
  const rcode = flags.rcode(m.flags);
  const ips: string[] = [];
  let ttl = Number.POSITIVE_INFINITY;
  for (const r of m.answers) {
    ttl = Math.min(ttl, r.ttl);
    if (r.type === qtype && (qtype === TYPE.A || qtype === TYPE.AAAA)) {
      const ip = recordAddress(r);
      if (ip) ips.push(ip);
    }
  }
  if (!Number.isFinite(ttl)) {
    // A negative answer lives as long as the SOA's minimum says (RFC 2308).
    const soa = m.authorities.find((r) => r.type === TYPE.SOA);
    ttl =
      soa && soa.data.length >= 4
        ? Math.min(soa.ttl, soa.data.readUInt32BE(soa.data.length - 4))
        : DEFAULT_TTL_SECONDS;
  }
  return { rcode, ips, ttlSeconds: ttl, raw };
}
