// `tp-lab up`: binaries, PKI, kubeconfigs, namespaces, then the processes in dependency order, each
// step waited for with a progress line. A running lab is left alone; a half-running one is repaired.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';
import { ensureBinaries } from './binaries.js';
import {
  COMPONENT_ORDER,
  type ComponentName,
  componentKubeconfig,
  componentSpec,
  kubeProxyConfigFile,
  type LabLayout,
  launchArgv,
  renderKubeProxyConfig,
} from './components.js';
import { corednsObjects } from './coredns.js';
import { labDown } from './down.js';
import { renderKubeconfig } from './kubeconfig.js';
import { adminClient, labLayout } from './layout.js';
import { createNetwork, networkHealthy } from './network.js';
import { imageNamed, type KeyedNodeImage, nodeImages } from './node-images.js';
import { containerdReady, ensureBridge, importImages, prepareNode, writeCniNetwork } from './node-runtime.js';
import { logFile, pidFile, writeIfChanged } from './paths.js';
import { ensurePki } from './pki.js';
import { assertHostCanRunLab } from './preflight.js';
import { liveProcess, startDetached } from './processes.js';
import {
  apiReady,
  corednsReady,
  kubeProxySyncedSince,
  nodeReady,
  servicesNotProgrammed,
} from './readiness.js';
import { tcpPortInUse } from './relay.js';
import { APISERVER_PORT, NODE_NAME, POD_BRIDGE, WORKSTATION_API_URL } from './topology.js';
import { ensureWorkstationResolvConf, workstationResolvConfPath } from './workstation.js';

export interface UpOptions {
  /** Progress lines for the user (stderr). */
  progress: (line: string) => void;
  /** Leave a failed lab as it is (for debugging) instead of taking it down. */
  keepOnFailure?: boolean;
}

export interface UpResult {
  kubeconfig: string;
  alreadyRunning: boolean;
  seconds: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function labUp(options: UpOptions): Promise<UpResult> {
  const started = Date.now();
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
  const say = (msg: string) => options.progress(`tp-lab: ${msg} (${elapsed()})`);

  assertHostCanRunLab();
  const bin = await ensureBinaries((line) => options.progress(line));
  const l = labLayout(bin);
  if (!fs.existsSync(l.labMain)) {
    throw new UsageError(`${l.labMain} is missing: build tp first (node build.mjs in the checkout)`);
  }

  const alive = COMPONENT_ORDER.filter((c) => liveProcess(pidFile(l.paths, c)));
  if (alive.length === COMPONENT_ORDER.length && (await apiReady(l))) {
    // A running lab still gets the images of this checkout (tp's image after a rebuild, above all).
    await importNodeImages(l, await nodeImages(l, say), say);
    say('the lab is already running');
    return { kubeconfig: l.paths.kubeconfig, alreadyRunning: true, seconds: (Date.now() - started) / 1000 };
  }
  const fresh = alive.length === 0;
  if (fresh) {
    // Leftovers of a crashed lab (namespaces, stale PID files, old cluster data) go first.
    await labDown({ progress: () => {}, dropLogs: true });
  } else if (!(await networkHealthy())) {
    throw new UsageError(
      `the lab is partly running (${alive.join(', ')}) but its network namespaces are gone: run \`tp-lab down\`, then \`tp-lab up\``,
    );
  }
  if (!alive.includes('api-forward') && (await tcpPortInUse('127.0.0.1', l.hostApiPort))) {
    throw new UsageError(
      `127.0.0.1:${l.hostApiPort} is in use by another process; the lab's API forward needs it: stop that process, or set TP_LAB_API_PORT to a free port`,
    );
  }

  // Interrupted half-way through a fresh start: leave nothing behind, as a failure would.
  const onSignal = () => {
    say('interrupted; taking the lab down again');
    labDown({ progress: () => {} }).finally(() => process.exit(130));
  };
  if (fresh) for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, onSignal);
  try {
    await bringUp(l, alive, say);
  } catch (err) {
    if (fresh && !options.keepOnFailure) {
      say(`failed; taking the lab down again (logs stay in ${l.paths.logs})`);
      await labDown({ progress: () => {} }).catch(() => {});
    }
    throw err;
  } finally {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.removeListener(sig, onSignal);
  }
  say(`ready; kubeconfig: ${l.paths.kubeconfig}`);
  return { kubeconfig: l.paths.kubeconfig, alreadyRunning: false, seconds: (Date.now() - started) / 1000 };
}

async function bringUp(l: LabLayout, alive: ComponentName[], say: (msg: string) => void): Promise<void> {
  const p = l.paths;
  const begun = new Date();
  for (const dir of [p.root, p.config, p.logs, p.pids, p.run]) fs.mkdirSync(dir, { recursive: true });
  if (alive.length === 0) {
    if (await ensurePki(p.pki)) say('generated the CA, certificates and service-account keys');
  }
  writeConfigs(l);

  if (!(await networkHealthy())) {
    await createNetwork();
    // A new workstation starts with the lab's own resolv.conf (`tp-lab exec` mounts it there).
    fs.rmSync(workstationResolvConfPath(p), { force: true });
    say('created network namespaces tplab-node and tplab-ws');
  }
  ensureWorkstationResolvConf(p);

  // Built from this machine's files before anything starts (reused while unchanged: a warm call is quick).
  const images = await nodeImages(l, say);

  const running = new Set<ComponentName>(alive);
  const start = async (name: ComponentName) => {
    if (running.has(name)) return;
    const spec = componentSpec(name, l);
    await startDetached(launchArgv(spec), logFile(p, name), pidFile(p, name));
    running.add(name);
    say(`started ${name}`);
  };
  // While waiting, a component that exits is the answer: show its log instead of timing out.
  const waitFor = <T>(what: string, timeoutMs: number, probe: () => Promise<T | null | undefined | false>) =>
    waitUntil(what, timeoutMs, probe, () => deadComponent(l, running));

  for (const c of ['api-relay', 'api-forward', 'etcd', 'kube-apiserver'] as const) await start(c);
  await waitFor('the API server to be ready (/readyz)', 180_000, () => apiReady(l));
  say('API server ready');

  const api = adminClient(l);
  try {
    await waitFor('the default namespace', 60_000, () => api.getJson('/api/v1/namespaces/default'));
    for (const obj of corednsObjects(imageNamed(images, 'coredns'))) await api.apply(obj);
    say('applied CoreDNS (Deployment kube-system/coredns, Service kube-dns)');

    // kube-proxy before the node: the Service rules (10.96.0.1 for CoreDNS) exist before pods.
    for (const c of ['kube-controller-manager', 'kube-scheduler', 'kube-proxy'] as const) await start(c);

    await prepareNode(l);
    await start('containerd');
    await waitFor('containerd to answer on its socket', 60_000, () => containerdReady(p));
    await importNodeImages(l, images, say);
    await start('kubelet');
    await waitFor(`node ${NODE_NAME} to register`, 120_000, () => api.getJson(`/api/v1/nodes/${NODE_NAME}`));
    // The controller-manager allocates the podCIDR; the CNI network follows it, then the node is Ready.
    const podCidr = await waitFor(`node ${NODE_NAME} to get a podCIDR`, 60_000, async () => {
      const node = await api.getJson<{ spec?: { podCIDR?: string } }>(`/api/v1/nodes/${NODE_NAME}`);
      return node?.spec?.podCIDR;
    });
    await ensureBridge(podCidr);
    if (writeCniNetwork(p, podCidr))
      say(`wrote the CNI network for podCIDR ${podCidr} (bridge ${POD_BRIDGE})`);
    await waitFor(`node ${NODE_NAME} to be Ready`, 180_000, () => nodeReady(api));
    say(`node ${NODE_NAME} Ready (kubelet, containerd, runc)`);
    await waitFor('CoreDNS to be ready', 180_000, () => corednsReady(api));
    say('CoreDNS ready');
    // kube-proxy has synced since this `up` began, and programmed every Service that has endpoints (a
    // restarted one can start knowing only some of them; the rules of the one before stay until it syncs).
    const proxySince = alive.includes('kube-proxy') ? new Date(0) : begun;
    await waitFor('kube-proxy to sync its rules', 90_000, () => kubeProxySyncedSince(proxySince));
    let missing: string[] = [];
    await waitFor("kube-proxy to program every Service's ClusterIP", 90_000, async () => {
      missing = await servicesNotProgrammed(api);
      return missing.length === 0;
    }).catch((err: Error) => {
      throw new Error(`${err.message}; missing: ${missing.join(', ')}`);
    });
  } finally {
    api.close();
  }
}

/** Imports the node's images containerd does not hold yet (or holds an older build of). */
async function importNodeImages(
  l: LabLayout,
  images: KeyedNodeImage[],
  say: (msg: string) => void,
): Promise<void> {
  const imported = await importImages(l.paths, images);
  if (imported.length) say(`imported ${imported.join(', ')} into the node's containerd`);
}

/** Writes the kubeconfigs (host, workstation, kubelet, components) and kube-proxy's config. */
function writeConfigs(l: LabLayout): void {
  const pki = l.paths.pki;
  const read = (name: string) => fs.readFileSync(path.join(pki, name), 'utf8');
  const ca = read('ca.crt');
  const write = (file: string, server: string, certName: string, user: string) =>
    writeIfChanged(
      file,
      renderKubeconfig({
        server,
        caPem: ca,
        clientCertPem: read(`${certName}.crt`),
        clientKeyPem: read(`${certName}.key`),
        user,
      }),
      0o600,
    );
  const inNode = `https://127.0.0.1:${APISERVER_PORT}`;
  write(l.paths.kubeconfig, `https://127.0.0.1:${l.hostApiPort}`, 'admin', 'tp-lab-admin');
  write(l.paths.kubeconfigWorkstation, WORKSTATION_API_URL, 'admin', 'tp-lab-admin');
  write(l.paths.kubeconfigNode, WORKSTATION_API_URL, 'node', `system:node:${NODE_NAME}`);
  write(componentKubeconfig(l, 'controller-manager'), inNode, 'controller-manager', 'controller-manager');
  write(componentKubeconfig(l, 'scheduler'), inNode, 'scheduler', 'scheduler');
  write(componentKubeconfig(l, 'kube-proxy'), inNode, 'kube-proxy', 'kube-proxy');
  writeIfChanged(kubeProxyConfigFile(l), renderKubeProxyConfig(l));
}

function deadComponent(l: LabLayout, running: Set<ComponentName>): string | null {
  for (const name of running) {
    if (liveProcess(pidFile(l.paths, name))) continue;
    const file = logFile(l.paths, name);
    let tail = '';
    try {
      tail = fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-15).join('\n    ');
    } catch {
      // No log yet.
    }
    return `${name} exited; the last lines of ${file}:\n    ${tail}`;
  }
  return null;
}

async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | null | undefined | false>,
  failed: () => string | null,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      lastError = (err as Error).message;
    }
    const dead = failed();
    if (dead) throw new Error(`while waiting for ${what}: ${dead}`);
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${timeoutMs / 1000}s waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}; logs are in the lab's logs/ directory`,
      );
    }
    await sleep(500);
  }
}
