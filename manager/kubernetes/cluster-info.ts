// What a workstation must know about the cluster's network to route to it: the pod subnets (from the
// nodes' spec.podCIDRs), the service subnet, the DNS service and the cluster domain. The service subnet
// is not published in one standard place, so it is found in order of reliability:
//   1. the chart value (an admin who knows it says so),
//   2. ServiceCIDR objects (networking.k8s.io/v1, GA in Kubernetes 1.33),
//   3. the API server's refusal of a Service with an out-of-range ClusterIP (a dry run: nothing is
//      created) — older API servers name the valid range in the message,
//   4. a guess from the `kubernetes` Service's IP (its /12), reported as a guess.
import * as fs from 'node:fs';
import {
  ApiException,
  CoreV1Api,
  type KubeConfig,
  makeInformer,
  NetworkingV1Api,
  type V1Node,
  type V1Pod,
} from '@kubernetes/client-node';
import { apiErrorMessage } from '../../kube/kubeconfig.js';
import type { Logger } from '../../logging/logger.js';
import { parseCidr } from '../../netaddr/parse.js';

export interface ClusterNetwork {
  podSubnets: string[];
  serviceSubnets: string[];
  /** How the service subnet was found: chart value, ServiceCIDR, API server, guess. */
  serviceSubnetSource: string;
  clusterDomain: string;
  dnsIPs: string[];
}

/** The pod subnets of a set of nodes: every spec.podCIDRs entry (or the older spec.podCIDR), once. */
export function podSubnetsOfNodes(nodes: V1Node[]): string[] {
  const out = new Set<string>();
  for (const n of nodes) {
    const cidrs = n.spec?.podCIDRs?.length ? n.spec.podCIDRs : n.spec?.podCIDR ? [n.spec.podCIDR] : [];
    for (const c of cidrs) out.add(parseCidr(c).text);
  }
  return [...out].sort();
}

/**
 * For clusters whose nodes carry no podCIDRs (some CNI plugins allocate on their own): the /16 (IPv4)
 * or /64 (IPv6) around each pod IP seen.
 */
export function podSubnetsOfPods(pods: V1Pod[]): string[] {
  const out = new Set<string>();
  for (const p of pods) {
    if (p.spec?.hostNetwork) continue;
    for (const { ip } of p.status?.podIPs ?? (p.status?.podIP ? [{ ip: p.status.podIP }] : [])) {
      if (!ip) continue;
      out.add(parseCidr(`${ip}/${ip.includes(':') ? 64 : 16}`).text);
    }
  }
  return [...out].sort();
}

/** The range an API server names when it refuses a ClusterIP, if it names one. */
export function serviceRangeFromError(message: string): string[] {
  const m = /valid IPs? (?:range )?is ([0-9a-fA-F.:/]+(?:,\s*[0-9a-fA-F.:/]+)*)/i.exec(message);
  if (!m) return [];
  const out: string[] = [];
  for (const part of m[1]!.split(',')) {
    try {
      out.push(parseCidr(part.trim()).text);
    } catch {
      // Not a CIDR after all.
    }
  }
  return out;
}

/** The cluster domain from a pod's resolv.conf search list ("<ns>.svc.cluster.local"). */
export function clusterDomainFromResolvConf(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^\s*search\s+(.*)$/.exec(line);
    if (!m) continue;
    for (const d of m[1]!.split(/\s+/)) {
      const s = /^svc\.(.+)$/.exec(d);
      if (s) return s[1]!.replace(/\.$/, '');
    }
  }
  return undefined;
}

export function nameserversFromResolvConf(text: string): string[] {
  return text
    .split('\n')
    .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
    .filter((s): s is string => !!s);
}

export interface ServiceSubnetDiscovery {
  kc: KubeConfig;
  /** The manager's namespace, where the dry-run Service would live. */
  namespace: string;
  /** The chart value (comma-separated CIDRs), empty when unset. */
  configured: string;
  log: Logger;
}

export async function discoverServiceSubnets(
  opts: ServiceSubnetDiscovery,
): Promise<{ subnets: string[]; source: string }> {
  if (opts.configured.trim() !== '') {
    return {
      subnets: opts.configured.split(',').map((c) => parseCidr(c.trim(), 'serviceCIDR').text),
      source: 'chart value',
    };
  }
  const networking = opts.kc.makeApiClient(NetworkingV1Api);
  try {
    const list = await networking.listServiceCIDR();
    const cidrs = new Set<string>();
    for (const item of list.items) for (const c of item.spec?.cidrs ?? []) cidrs.add(parseCidr(c).text);
    if (cidrs.size > 0) return { subnets: [...cidrs].sort(), source: 'ServiceCIDR' };
  } catch (err) {
    opts.log.debug('no ServiceCIDR objects', { error: apiErrorMessage(err) });
  }
  const core = opts.kc.makeApiClient(CoreV1Api);
  for (const probe of ['1.1.1.1', 'fd00::1']) {
    try {
      await core.createNamespacedService({
        namespace: opts.namespace,
        dryRun: 'All',
        body: {
          metadata: { name: 'tp-service-cidr-probe' },
          spec: { clusterIP: probe, ports: [{ port: 443 }] },
        },
      });
    } catch (err) {
      const subnets = serviceRangeFromError(apiErrorMessage(err));
      if (subnets.length > 0) return { subnets, source: 'API server' };
      if (!(err instanceof ApiException)) break;
    }
  }
  try {
    const svc = await core.readNamespacedService({ name: 'kubernetes', namespace: 'default' });
    const ip = svc.spec?.clusterIP;
    if (ip) {
      const guess = parseCidr(`${ip}/${ip.includes(':') ? 108 : 12}`).text;
      opts.log.warn(
        'guessed the service subnet from the kubernetes Service; set the chart value serviceCIDR',
        {
          guess,
        },
      );
      return { subnets: [guess], source: 'guess' };
    }
  } catch (err) {
    opts.log.warn('cannot read the kubernetes Service', { error: apiErrorMessage(err) });
  }
  return { subnets: [], source: 'unknown' };
}

/** The cluster DNS servers: the kube-dns Service, else the pod's own resolv.conf. */
export async function discoverDns(
  kc: KubeConfig,
  configuredDomain: string,
  log: Logger,
  resolvConf = '/etc/resolv.conf',
): Promise<{ dnsIPs: string[]; clusterDomain: string }> {
  let text = '';
  try {
    text = fs.readFileSync(resolvConf, 'utf8');
  } catch {
    // Not in a pod.
  }
  const clusterDomain = configuredDomain || clusterDomainFromResolvConf(text) || 'cluster.local';
  try {
    const svc = await kc
      .makeApiClient(CoreV1Api)
      .readNamespacedService({ name: 'kube-dns', namespace: 'kube-system' });
    const ips = svc.spec?.clusterIPs ?? (svc.spec?.clusterIP ? [svc.spec.clusterIP] : []);
    if (ips.length > 0) return { dnsIPs: ips, clusterDomain };
  } catch (err) {
    log.debug('cannot read the kube-dns Service; using resolv.conf', { error: apiErrorMessage(err) });
  }
  return { dnsIPs: nameserversFromResolvConf(text), clusterDomain };
}

/**
 * Keeps the cluster network current: nodes come and go, and with them pod subnets. The service subnet
 * and DNS are found once at start.
 */
export class ClusterInfoSource {
  private readonly nodes;
  private network: ClusterNetwork = {
    podSubnets: [],
    serviceSubnets: [],
    serviceSubnetSource: 'unknown',
    clusterDomain: 'cluster.local',
    dnsIPs: [],
  };
  private readonly listeners = new Set<(n: ClusterNetwork) => void>();
  private stopped = false;

  constructor(
    private readonly opts: ServiceSubnetDiscovery & {
      clusterDomain: string;
      /** Pods of the managed namespaces, for clusters whose nodes carry no podCIDRs. */
      pods?: () => V1Pod[];
    },
  ) {
    const core = opts.kc.makeApiClient(CoreV1Api);
    this.nodes = makeInformer<V1Node>(opts.kc, '/api/v1/nodes', () => core.listNode());
    for (const verb of ['add', 'update', 'delete'] as const) this.nodes.on(verb, () => this.refreshPods());
    this.nodes.on('error', (err: unknown) => {
      if (this.stopped) return;
      opts.log.warn('watch of nodes failed, retrying (pod subnets may be stale)', {
        error: apiErrorMessage(err),
      });
      setTimeout(() => {
        if (!this.stopped) this.nodes.start().catch(() => {});
      }, 5000).unref();
    });
  }

  async start(): Promise<ClusterNetwork> {
    const [services, dns] = await Promise.all([
      discoverServiceSubnets(this.opts),
      discoverDns(this.opts.kc, this.opts.clusterDomain, this.opts.log),
    ]);
    this.network = {
      ...this.network,
      serviceSubnets: services.subnets,
      serviceSubnetSource: services.source,
      dnsIPs: dns.dnsIPs,
      clusterDomain: dns.clusterDomain,
    };
    await this.nodes.start();
    this.refreshPods();
    this.opts.log.info('cluster network', {
      podSubnets: this.network.podSubnets.join(','),
      serviceSubnets: this.network.serviceSubnets.join(','),
      serviceSubnetSource: this.network.serviceSubnetSource,
      dns: this.network.dnsIPs.join(','),
      clusterDomain: this.network.clusterDomain,
    });
    return this.network;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.nodes.stop();
  }

  current(): ClusterNetwork {
    return this.network;
  }

  onChange(listener: (n: ClusterNetwork) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private refreshPods(): void {
    const nodes = (this.nodes as unknown as { list(): V1Node[] }).list();
    let podSubnets = podSubnetsOfNodes(nodes);
    if (podSubnets.length === 0 && this.opts.pods) podSubnets = podSubnetsOfPods(this.opts.pods());
    if (podSubnets.join() === this.network.podSubnets.join()) return;
    this.network = { ...this.network, podSubnets };
    for (const l of this.listeners) l(this.network);
  }
}
