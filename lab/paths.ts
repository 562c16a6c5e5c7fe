// Where the lab keeps its state: $TP_LAB_DIR (default ~/.local/state/tp-lab). The layout is part of
// lab/README.md's contract.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parsePort } from '../netaddr/parse.js';
import { DEFAULT_HOST_API_PORT } from './topology.js';

export interface LabPaths {
  root: string;
  pki: string;
  /** Component configuration the lab renders: component kubeconfigs, kube-proxy's config. */
  config: string;
  logs: string;
  pids: string;
  /** Unix sockets (the API relay). */
  run: string;
  etcdData: string;
  /** containerd's root (content store, snapshots: the node's images survive `down`). */
  containerdRoot: string;
  /** containerd's state (tasks, rootfs mounts, pod network namespaces, runc's state). */
  containerdState: string;
  /** containerd's CRI socket (the kubelet's and crictl's runtime endpoint). */
  containerdSocket: string;
  /** The kubelet's --root-dir (pod volumes, plugins, checkpoints). */
  kubelet: string;
  /** Pod and container logs (the kubelet's podLogsDir). */
  podLogs: string;
  /** The CNI network: net.d/ (the conflist containerd reads) and ipam/ (host-local's allocations). */
  cniConf: string;
  cniIpam: string;
  /** The image archives the lab builds and imports into containerd. */
  images: string;
  /** Host kubeconfig: https://127.0.0.1:<host port>. */
  kubeconfig: string;
  /** Workstation kubeconfig: https://172.30.0.1:6443. */
  kubeconfigWorkstation: string;
  /** The kubelet's credentials (system:node:tplab-node). */
  kubeconfigNode: string;
  /** The unix socket the relay inside tplab-node serves; the root-namespace forward connects to it. */
  apiRelaySocket: string;
}

export function labDir(): string {
  if (process.env.TP_LAB_DIR) return path.resolve(process.env.TP_LAB_DIR);
  const state = process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(state, 'tp-lab');
}

export function labPaths(root = labDir()): LabPaths {
  const run = path.join(root, 'run');
  return {
    root,
    pki: path.join(root, 'pki'),
    config: path.join(root, 'config'),
    logs: path.join(root, 'logs'),
    pids: path.join(root, 'pids'),
    run,
    etcdData: path.join(root, 'etcd'),
    containerdRoot: path.join(root, 'containerd', 'root'),
    containerdState: path.join(root, 'containerd', 'state'),
    containerdSocket: path.join(run, 'containerd.sock'),
    kubelet: path.join(root, 'kubelet'),
    podLogs: path.join(root, 'pod-logs'),
    cniConf: path.join(root, 'cni', 'net.d'),
    cniIpam: path.join(root, 'cni', 'ipam'),
    images: path.join(root, 'images'),
    kubeconfig: path.join(root, 'kubeconfig'),
    kubeconfigWorkstation: path.join(root, 'kubeconfig-ws'),
    kubeconfigNode: path.join(root, 'kubeconfig-node'),
    apiRelaySocket: path.join(run, 'apiserver.sock'),
  };
}

/** The host port of the root-namespace forward: $TP_LAB_API_PORT, default 16443. */
export function hostApiPort(): number {
  const v = process.env.TP_LAB_API_PORT;
  return v ? parsePort(v, 'TP_LAB_API_PORT') : DEFAULT_HOST_API_PORT;
}

export function logFile(p: LabPaths, component: string): string {
  return path.join(p.logs, `${component}.log`);
}

export function pidFile(p: LabPaths, component: string): string {
  return path.join(p.pids, `${component}.pid`);
}

/**
 * Writes a file only when its content changes: kube-proxy (and containerd) watch their configuration and
 * exit or reload when it is touched, so `up` on a running lab must leave unchanged files alone.
 * Returns whether it wrote.
 */
export function writeIfChanged(file: string, content: string, mode?: number): boolean {
  try {
    if (fs.readFileSync(file, 'utf8') === content) return false;
  } catch {
    // Missing: write it.
  }
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, content, mode === undefined ? undefined : { mode });
  fs.renameSync(tmp, file);
  return true;
}
