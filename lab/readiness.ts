// The readiness checks `up` waits for and `status` reports, all through the host's API forward.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LabApiClient } from './api.js';
import type { LabLayout } from './components.js';
import { adminClient } from './layout.js';
import { NODE_NAME } from './topology.js';

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
