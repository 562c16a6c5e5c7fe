// A pod's /etc/resolv.conf and /etc/hosts as the kubelet writes them (dnsPolicy, dnsConfig,
// hostname/subdomain, hostAliases). Pure.
import type { V1Pod } from '@kubernetes/client-node';

export interface ClusterDnsConfig {
  /** The cluster DNS service IPs (kube-dns). */
  servers: string[];
  /** e.g. cluster.local */
  domain: string;
}

export interface ResolvConf {
  nameservers: string[];
  searches: string[];
  options: string[];
}

/** The kubelet's limits (validation.MaxDNSNameservers, MaxDNSSearchPaths). */
const MAX_NAMESERVERS = 3;
const MAX_SEARCHES = 32;

export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = { nameservers: [], searches: [], options: [] };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [key, ...rest] = line.split(/\s+/);
    if (key === 'nameserver' && rest[0]) out.nameservers.push(rest[0]);
    else if (key === 'search' || key === 'domain') out.searches = rest;
    else if (key === 'options') out.options.push(...rest);
  }
  return out;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

/** Options merge by name: a later "ndots:2" replaces "ndots:5". */
function mergeOptions(base: string[], extra: { name?: string; value?: string }[]): string[] {
  const byName = new Map<string, string>();
  for (const o of base) byName.set(o.split(':')[0]!, o);
  for (const o of extra) {
    if (!o.name) continue;
    byName.set(o.name, o.value !== undefined && o.value !== '' ? `${o.name}:${o.value}` : o.name);
  }
  return [...byName.values()];
}

export function podResolvConf(pod: V1Pod, cluster: ClusterDnsConfig, hostResolvConf: string): ResolvConf {
  const spec = pod.spec ?? { containers: [] };
  let policy = spec.dnsPolicy ?? 'ClusterFirst';
  // A host-network pod with ClusterFirst gets the host's DNS; ClusterFirstWithHostNet opts in.
  if (policy === 'ClusterFirst' && spec.hostNetwork) policy = 'Default';
  if (policy === 'ClusterFirstWithHostNet') policy = 'ClusterFirst';
  const host = parseResolvConf(hostResolvConf);
  let conf: ResolvConf;
  if (policy === 'None') conf = { nameservers: [], searches: [], options: [] };
  else if (policy === 'Default') conf = host;
  else {
    const ns = pod.metadata?.namespace ?? 'default';
    conf = {
      nameservers: [...cluster.servers],
      searches: [`${ns}.svc.${cluster.domain}`, `svc.${cluster.domain}`, cluster.domain, ...host.searches],
      options: ['ndots:5'],
    };
  }
  const extra = spec.dnsConfig;
  return {
    nameservers: unique([...conf.nameservers, ...(extra?.nameservers ?? [])]).slice(0, MAX_NAMESERVERS),
    searches: unique([...conf.searches, ...(extra?.searches ?? [])]).slice(0, MAX_SEARCHES),
    options: mergeOptions(conf.options, extra?.options ?? []),
  };
}

export function renderResolvConf(conf: ResolvConf): string {
  const lines: string[] = [];
  if (conf.searches.length) lines.push(`search ${conf.searches.join(' ')}`);
  for (const s of conf.nameservers) lines.push(`nameserver ${s}`);
  if (conf.options.length) lines.push(`options ${conf.options.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/** The pod's hostname: spec.hostname or the pod name, cut to 63 characters like the kubelet. */
export function podHostname(pod: V1Pod): string {
  const name = pod.spec?.hostname || pod.metadata?.name || 'pod';
  return name.slice(0, 63).replace(/[-.]+$/, '');
}

export function renderHosts(pod: V1Pod, podIP: string, clusterDomain: string): string {
  const hostname = podHostname(pod);
  const lines = [
    '# Kubernetes-managed hosts file.',
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'fe00::0\tip6-mcastprefix',
    'fe00::1\tip6-allnodes',
    'fe00::2\tip6-allrouters',
  ];
  const subdomain = pod.spec?.subdomain;
  if (subdomain) {
    const ns = pod.metadata?.namespace ?? 'default';
    lines.push(`${podIP}\t${hostname}.${subdomain}.${ns}.svc.${clusterDomain}\t${hostname}`);
  } else {
    lines.push(`${podIP}\t${hostname}`);
  }
  const aliases = pod.spec?.hostAliases ?? [];
  if (aliases.length) {
    lines.push('', '# Entries added by HostAliases.');
    for (const a of aliases) lines.push(`${a.ip}\t${(a.hostnames ?? []).join('\t')}`);
  }
  return `${lines.join('\n')}\n`;
}
