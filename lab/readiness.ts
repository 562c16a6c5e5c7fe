// The readiness checks `up` waits for and `status` reports, all through the host's API forward.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LabApiClient } from './api.js';
import { runCommand } from './command.js';
import type { LabLayout } from './components.js';
import { adminClient } from './layout.js';
import { NODE_NAME, NODE_NETNS } from './topology.js';

/** /readyz through the root namespace's forward: proves etcd, the API server and both relays. */
export async function apiReady(l: LabLayout): Promise<boolean> {
  if (!fs.existsSync(path.join(l.paths.pki, 'admin.crt'))) return false;
  const api = adminClient(l);
  try {
    const r = await api.request('GET', '/readyz');
    return r.status === 200;
  } catch {
    return false;
  } finally {
    api.close();
  }
}

interface Condition {
  type: string;
  status: string;
}

export async function nodeReady(api: LabApiClient): Promise<boolean> {
  const node = await api.getJson<{ status?: { conditions?: Condition[] } }>(`/api/v1/nodes/${NODE_NAME}`);
  return node?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

export async function corednsReady(api: LabApiClient): Promise<boolean> {
  const d = await api.getJson<{ status?: { availableReplicas?: number } }>(
    '/apis/apps/v1/namespaces/kube-system/deployments/coredns',
  );
  return (d?.status?.availableReplicas ?? 0) >= 1;
}

interface ServiceList {
  items: {
    metadata: { name: string; namespace: string };
    spec: { clusterIP?: string; ports?: { port: number; protocol?: string }[] };
  }[];
}
interface SliceList {
  items: {
    metadata: { namespace: string; labels?: Record<string, string> };
    endpoints?: { conditions?: { ready?: boolean } }[];
  }[];
}

/** The ClusterIP:port of every TCP Service port that has a ready endpoint (at most `limit` of them). */
export async function answeringServiceTargets(api: LabApiClient, limit = 50): Promise<string[]> {
  const services = await api.getJson<ServiceList>('/api/v1/services');
  const slices = await api.getJson<SliceList>('/apis/discovery.k8s.io/v1/endpointslices');
  const withEndpoints = new Set(
    (slices?.items ?? [])
      .filter((s) => s.endpoints?.some((e) => e.conditions?.ready))
      .map((s) => `${s.metadata.namespace}/${s.metadata.labels?.['kubernetes.io/service-name'] ?? ''}`),
  );
  const targets: string[] = [];
  for (const svc of services?.items ?? []) {
    const ip = svc.spec.clusterIP;
    if (!ip || ip === 'None' || !withEndpoints.has(`${svc.metadata.namespace}/${svc.metadata.name}`))
      continue;
    for (const p of svc.spec.ports ?? [])
      if ((p.protocol ?? 'TCP') === 'TCP') targets.push(`${ip}:${p.port}`);
  }
  return targets.slice(0, limit);
}

/** The ClusterIP:port pairs kube-proxy has programmed, from `iptables-save -t nat` (KUBE-SERVICES rules). */
export function programmedServices(natRules: string): Set<string> {
  const out = new Set<string>();
  for (const line of natRules.split('\n')) {
    if (!line.startsWith('-A KUBE-SERVICES ')) continue;
    const ip = / -d (\S+?)\/32 /.exec(line)?.[1];
    const port = / --dport (\d+)/.exec(line)?.[1];
    if (ip && port) out.add(`${ip}:${port}`);
  }
  return out;
}

/**
 * The Services with ready endpoints that kube-proxy has not programmed (ClusterIP:port), [] when it has
 * them all: after a restart a kube-proxy can come up knowing only some of them.
 */
export async function servicesNotProgrammed(api: LabApiClient): Promise<string[]> {
  const targets = await answeringServiceTargets(api);
  if (targets.length === 0) return [];
  const r = await runCommand(
    ['nsenter', `--net=/run/netns/${NODE_NETNS}`, '--', 'iptables-save', '-t', 'nat'],
    {
      timeoutMs: 20_000,
    },
  );
  const programmed = programmedServices(r.stdout);
  return targets.filter((t) => !programmed.has(t));
}

/** kube-proxy's health endpoint, on the node namespace's loopback (renderKubeProxyConfig). */
const KUBE_PROXY_HEALTHZ = 'http://127.0.0.1:10256/healthz';

/**
 * Whether kube-proxy has synced its rules since `since` (it reports its last sync on /healthz): a
 * kube-proxy that was just started has not, even though the previous one's rules are still in place.
 */
export async function kubeProxySyncedSince(since: Date): Promise<boolean> {
  const r = await runCommand(
    ['nsenter', `--net=/run/netns/${NODE_NETNS}`, '--', 'curl', '-sf', '-m', '3', KUBE_PROXY_HEALTHZ],
    { check: false, timeoutMs: 10_000 },
  );
  if (r.code !== 0) return false;
  try {
    const h = JSON.parse(r.stdout) as { lastUpdated?: string; healthy?: boolean };
    return h.healthy === true && h.lastUpdated !== undefined && new Date(h.lastUpdated) >= since;
  } catch {
    return false;
  }
}
