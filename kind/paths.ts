// Where tp-kind keeps things: state under $TP_KIND_DIR (default ~/.local/state/tp-kind), what is worth
// keeping between runs (the root filesystem, images, Docker's data with the node image) under
// $TP_KIND_CACHE (default ~/.cache/tp-kind), and the running Docker engine's sockets under /run/tp-kind.
import * as os from 'node:os';
import * as path from 'node:path';

export interface KindPaths {
  root: string;
  cache: string;
  /** kind's kubeconfig for this host (https://127.0.0.1:PORT through Docker's port forward). */
  kubeconfig: string;
  /** The workstation's (https://NODE_IP:6443 over the workstation's veth). */
  wsKubeconfig: string;
  wsResolvConf: string;
  /** What test/e2e reads through TP_E2E_WORKSTATION. */
  workstation: string;
  clusterConfig: string;
  images: string;
  dockerState: string;
  dockerLog: string;
  dockerData: string;
  dockerRun: string;
  dockerSocket: string;
  runtimeWrapper: string;
}

export function kindPaths(env: NodeJS.ProcessEnv = process.env): KindPaths {
  const root = env.TP_KIND_DIR || path.join(os.homedir(), '.local', 'state', 'tp-kind');
  const cache =
    env.TP_KIND_CACHE || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'tp-kind');
  const dockerRun = '/run/tp-kind';
  return {
    root,
    cache,
    kubeconfig: path.join(root, 'kubeconfig'),
    wsKubeconfig: path.join(root, 'kubeconfig-ws'),
    wsResolvConf: path.join(root, 'ws', 'resolv.conf'),
    workstation: path.join(root, 'workstation.json'),
    clusterConfig: path.join(root, 'kind-config.yaml'),
    images: path.join(cache, 'images'),
    dockerState: path.join(root, 'docker.json'),
    dockerLog: path.join(root, 'dockerd.log'),
    dockerData: path.join(cache, 'docker'),
    dockerRun,
    dockerSocket: path.join(dockerRun, 'docker.sock'),
    runtimeWrapper: path.join(root, 'tp-kind-runc'),
  };
}
