// Where the lab keeps its state: $TP_LAB_DIR (default ~/.local/state/tp-lab). The layout is part of
// lab/README.md's contract; the node agent owns node/.
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
  /** The node agent's pod state. */
  node: string;
  /** Host kubeconfig: https://127.0.0.1:<host port>. */
  kubeconfig: string;
  /** Workstation kubeconfig: https://172.30.0.1:6443. */
  kubeconfigWorkstation: string;
  /** The node agent's credentials. */
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
    node: path.join(root, 'node'),
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
