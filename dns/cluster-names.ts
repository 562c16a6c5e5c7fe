// Which names are the cluster's, and the fully qualified name the cluster's DNS knows them by.
//   echo                            -> echo.<connected namespace>.svc.<cluster domain>   (single label)
//   echo.other                      -> echo.other.svc.<cluster domain>     (when "other" is a namespace)
//   echo.other.svc                  -> echo.other.svc.<cluster domain>
//   anything.<cluster domain>       -> itself
//   d.c.b.a.in-addr.arpa / ip6.arpa -> itself, when the address is in a routed cluster subnet (PTR)
// Everything else is not the cluster's: it goes to the resolvers the workstation had.
import { type Cidr, cidrContains } from '../netaddr/parse.js';
import { canonicalName } from './wire.js';

export interface ClusterDnsScope {
  /** "cluster.local" */
  clusterDomain: string;
  /** The namespace tp connected to: single-label names resolve there. */
  namespace: string;
  /** Namespaces known to exist: NAME.NAMESPACE resolves for these. */
  namespaces: string[];
  /** Cluster subnets: reverse lookups of their addresses go to the cluster. */
  subnets: Cidr[];
}

export interface ClusterName {
  /** The name to ask the cluster's DNS, canonical (lowercase, trailing dot). */
  fqdn: string;
  /**
   * A single-label name: if the cluster does not know it, the workstation's resolvers get their turn
   * (the name may be a host on the local network).
   */
  fallThrough: boolean;
}

/** The cluster name for a query name, or undefined when the name is not the cluster's. */
export function clusterNameFor(qname: string, scope: ClusterDnsScope): ClusterName | undefined {
  const name = canonicalName(qname);
  const domain = canonicalName(scope.clusterDomain).replace(/^\.$/, '');
  const bare = name.slice(0, -1);
  if (bare === '') return undefined;
  if (domain && (name === domain || name.endsWith(`.${domain}`))) return { fqdn: name, fallThrough: false };
  const labels = bare.split('.');
  const last = labels[labels.length - 1]!;
  if (last === 'svc') return { fqdn: `${bare}.${domain}`, fallThrough: false };
  if (labels.length === 1)
    return { fqdn: `${bare}.${canonicalName(scope.namespace)}svc.${domain}`, fallThrough: true };
  if (
    labels.length === 2 &&
    (last === scope.namespace.toLowerCase() || scope.namespaces.some((n) => n.toLowerCase() === last))
  )
    return { fqdn: `${bare}.svc.${domain}`, fallThrough: false };
  const reverse = reverseAddress(bare);
  if (reverse && scope.subnets.some((s) => cidrContains(s, reverse)))
    return { fqdn: name, fallThrough: false };
  return undefined;
}

/** The address of an in-addr.arpa / ip6.arpa name (without the trailing dot), if it names a whole one. */
export function reverseAddress(name: string): string | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(name);
  if (v4) {
    const octets = [v4[4], v4[3], v4[2], v4[1]].map(Number);
    return octets.every((o) => o <= 255) ? octets.join('.') : undefined;
  }
  const v6 = /^((?:[0-9a-f]\.){32})ip6\.arpa$/.exec(name);
  if (v6) {
    const nibbles = v6[1]!.split('.').filter(Boolean).reverse().join('');
    return nibbles.match(/.{4}/g)!.join(':');
  }
  return undefined;
}
