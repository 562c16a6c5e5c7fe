// `tp-lab status`: which processes run, which namespaces exist, whether the API, the node and
// CoreDNS are ready. Read-only; works (and says "down") when nothing runs.
import * as fs from 'node:fs';
import { cachedBinDir, missingBinaries } from './binaries.js';
import { COMPONENT_ORDER, type ComponentName } from './components.js';
import { adminClient, labLayout } from './layout.js';
import { listNamespaces } from './network.js';
import { pidFile } from './paths.js';
import { liveProcess } from './processes.js';
import { apiReady, corednsReady, nodeReady } from './readiness.js';
import { NODE_NAME } from './topology.js';

export interface LabStatus {
  state: 'running' | 'degraded' | 'down';
  dir: string;
  kubeconfig: string | null;
  kubeconfigWorkstation: string | null;
  hostApi: string;
  bin: string;
  binariesBuilt: boolean;
  components: { name: ComponentName; running: boolean; pid: number | null }[];
  namespaces: string[];
  apiReady: boolean;
  nodeReady: boolean;
  /** The node as the kubelet reports it (kubelet version, container runtime), when the API answers. */
  node: { kubelet: string; runtime: string } | null;
  corednsReady: boolean;
}

export async function labStatus(): Promise<LabStatus> {
  const bin = cachedBinDir();
  const l = labLayout(bin);
  const components = COMPONENT_ORDER.map((name) => {
    const p = liveProcess(pidFile(l.paths, name));
    return { name, running: p !== null, pid: p?.pid ?? null };
  });
  const namespaces = await listNamespaces().catch(() => []);
  const ready = components.some((c) => c.running) && (await apiReady(l));
  let node = false;
  let nodeInfo: LabStatus['node'] = null;
  let dns = false;
  if (ready) {
    const api = adminClient(l);
    try {
      node = await nodeReady(api).catch(() => false);
      const info = await api
        .getJson<{ status?: { nodeInfo?: { kubeletVersion?: string; containerRuntimeVersion?: string } } }>(
          `/api/v1/nodes/${NODE_NAME}`,
        )
        .catch(() => undefined);
      if (info?.status?.nodeInfo) {
        nodeInfo = {
          kubelet: info.status.nodeInfo.kubeletVersion ?? '',
          runtime: info.status.nodeInfo.containerRuntimeVersion ?? '',
        };
      }
      dns = await corednsReady(api).catch(() => false);
    } finally {
      api.close();
    }
  }
  const allRunning = components.every((c) => c.running);
  const nothing = !components.some((c) => c.running) && namespaces.length === 0;
  return {
    state: nothing ? 'down' : allRunning && ready && node && dns ? 'running' : 'degraded',
    dir: l.paths.root,
    kubeconfig: fs.existsSync(l.paths.kubeconfig) ? l.paths.kubeconfig : null,
    kubeconfigWorkstation: fs.existsSync(l.paths.kubeconfigWorkstation)
      ? l.paths.kubeconfigWorkstation
      : null,
    hostApi: `https://127.0.0.1:${l.hostApiPort}`,
    bin,
    binariesBuilt: missingBinaries(bin).length === 0,
    components,
    namespaces,
    apiReady: ready,
    nodeReady: node,
    node: nodeInfo,
    corednsReady: dns,
  };
}

export function renderStatus(s: LabStatus): string {
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const lines = [
    `lab:         ${s.state}`,
    `state dir:   ${s.dir}`,
    `binaries:    ${s.binariesBuilt ? s.bin : `not built (tp-lab build or tp-lab up builds them into ${s.bin})`}`,
    `API:         ${s.hostApi} ready=${yes(s.apiReady)}`,
    `node Ready:  ${yes(s.nodeReady)}${s.node ? ` (kubelet ${s.node.kubelet}, ${s.node.runtime})` : ''}`,
    `CoreDNS:     ${s.corednsReady ? 'ready' : 'not ready'}`,
    `namespaces:  ${s.namespaces.length ? s.namespaces.join(' ') : '(none)'}`,
    'processes:',
    ...s.components.map((c) => `  ${c.name.padEnd(24)} ${c.running ? `running (pid ${c.pid})` : 'stopped'}`),
  ];
  if (s.kubeconfig) lines.push(`kubeconfig:  ${s.kubeconfig}`);
  return `${lines.join('\n')}\n`;
}
