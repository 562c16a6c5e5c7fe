// The lab's processes and their command lines: a pure function of the binaries, the state layout and
// the topology, so the flags are reviewed (and unit-tested) in one place. The node's configuration files
// (containerd, the kubelet, CNI) are rendered in node-config.ts.
import * as path from 'node:path';
import { stringify } from 'yaml';
import { containerdConfigFile, kubeletConfigFile } from './node-config.js';
import type { LabPaths } from './paths.js';
import {
  APISERVER_PORT,
  CLUSTER_CIDR,
  CLUSTER_DOMAIN,
  ETCD_CLIENT_PORT,
  ETCD_PEER_PORT,
  NODE_CIDR_MASK,
  NODE_IP,
  NODE_NAME,
  NODE_NETNS,
  SERVICE_CIDR,
} from './topology.js';

export type ComponentName =
  | 'api-relay'
  | 'api-forward'
  | 'etcd'
  | 'kube-apiserver'
  | 'kube-controller-manager'
  | 'kube-scheduler'
  | 'kube-proxy'
  | 'containerd'
  | 'kubelet';

export interface ComponentSpec {
  name: ComponentName;
  /** The network namespace it runs in; null for the root namespace (only the API forward). */
  netns: string | null;
  /** The program and its arguments (before entering the namespace). */
  argv: string[];
  /** How long SIGTERM may take before SIGKILL. */
  stopGraceMs: number;
}

export interface LabLayout {
  /** Directory with kube-apiserver, etcd, … (lab/build.sh's output). */
  bin: string;
  paths: LabPaths;
  /** dist/lab/main.js (the relays are `tp-lab relay …`). */
  labMain: string;
  hostApiPort: number;
}

/** Start order; `down` stops in reverse. */
export const COMPONENT_ORDER: ComponentName[] = [
  'api-relay',
  'api-forward',
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kube-proxy',
  'containerd',
  'kubelet',
];

const pki = (l: LabLayout, file: string) => path.join(l.paths.pki, file);
export const componentKubeconfig = (l: LabLayout, name: string) =>
  path.join(l.paths.config, `${name}.kubeconfig`);
export const kubeProxyConfigFile = (l: LabLayout) => path.join(l.paths.config, 'kube-proxy.yaml');

export function etcd(l: LabLayout): ComponentSpec {
  const client = `http://127.0.0.1:${ETCD_CLIENT_PORT}`;
  const peer = `http://127.0.0.1:${ETCD_PEER_PORT}`;
  return {
    name: 'etcd',
    netns: NODE_NETNS,
    stopGraceMs: 10_000,
    argv: [
      path.join(l.bin, 'etcd'),
      '--name=tplab',
      `--data-dir=${l.paths.etcdData}`,
      // Plain HTTP on the node namespace's loopback: only the API server, beside it, can reach it.
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=tplab=${peer}`,
      '--initial-cluster-state=new',
      // A disposable cluster on a busy 2-core machine: fsync latency would dominate every write.
      '--unsafe-no-fsync',
      '--log-level=warn',
    ],
  };
}

export function kubeApiserver(l: LabLayout): ComponentSpec {
  return {
    name: 'kube-apiserver',
    netns: NODE_NETNS,
    stopGraceMs: 10_000,
    argv: [
      path.join(l.bin, 'kube-apiserver'),
      `--advertise-address=${NODE_IP}`,
      '--bind-address=0.0.0.0',
      `--secure-port=${APISERVER_PORT}`,
      `--etcd-servers=http://127.0.0.1:${ETCD_CLIENT_PORT}`,
      `--client-ca-file=${pki(l, 'ca.crt')}`,
      `--tls-cert-file=${pki(l, 'apiserver.crt')}`,
      `--tls-private-key-file=${pki(l, 'apiserver.key')}`,
      `--service-account-issuer=https://kubernetes.default.svc.${CLUSTER_DOMAIN}`,
      `--service-account-key-file=${pki(l, 'sa.pub')}`,
      `--service-account-signing-key-file=${pki(l, 'sa.key')}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook',
      '--allow-privileged=true',
      `--kubelet-client-certificate=${pki(l, 'apiserver-kubelet-client.crt')}`,
      `--kubelet-client-key=${pki(l, 'apiserver-kubelet-client.key')}`,
      `--kubelet-certificate-authority=${pki(l, 'ca.crt')}`,
      '--kubelet-preferred-address-types=InternalIP',
      `--requestheader-client-ca-file=${pki(l, 'front-proxy-ca.crt')}`,
      '--requestheader-allowed-names=front-proxy-client',
      '--requestheader-username-headers=X-Remote-User',
      '--requestheader-group-headers=X-Remote-Group',
      '--requestheader-extra-headers-prefix=X-Remote-Extra-',
      `--proxy-client-cert-file=${pki(l, 'front-proxy-client.crt')}`,
      `--proxy-client-key-file=${pki(l, 'front-proxy-client.key')}`,
      '--profiling=false',
      '--v=1',
    ],
  };
}

/** Flags every controller that authenticates its own /healthz callers shares. */
const delegatedAuth = (kubeconfig: string) => [
  `--kubeconfig=${kubeconfig}`,
  `--authentication-kubeconfig=${kubeconfig}`,
  `--authorization-kubeconfig=${kubeconfig}`,
  '--bind-address=127.0.0.1',
  '--leader-elect=false',
];

export function kubeControllerManager(l: LabLayout): ComponentSpec {
  return {
    name: 'kube-controller-manager',
    netns: NODE_NETNS,
    stopGraceMs: 5_000,
    argv: [
      path.join(l.bin, 'kube-controller-manager'),
      ...delegatedAuth(componentKubeconfig(l, 'controller-manager')),
      '--controllers=*',
      '--allocate-node-cidrs=true',
      `--cluster-cidr=${CLUSTER_CIDR}`,
      `--node-cidr-mask-size=${NODE_CIDR_MASK}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      // No cloud: nothing programs routes; the node's CNI bridge is the only pod network.
      '--configure-cloud-routes=false',
      '--cluster-name=tp-lab',
      `--service-account-private-key-file=${pki(l, 'sa.key')}`,
      `--root-ca-file=${pki(l, 'ca.crt')}`,
      '--use-service-account-credentials=true',
      // Longer than a kube-apiserver restart (it drains for up to a minute on SIGTERM): with the default
      // 50 s the node's lease looked stale when the API server came back, the node was marked NotReady and
      // its pods' endpoints dropped, so every Service failed for a while after `tp-lab restart
      // kube-apiserver` (the faults suite, docs/faults.md). A node that is really gone takes 2 min to see.
      '--node-monitor-grace-period=2m',
      `--cluster-signing-cert-file=${pki(l, 'ca.crt')}`,
      `--cluster-signing-key-file=${pki(l, 'ca.key')}`,
      '--v=1',
    ],
  };
}

export function kubeScheduler(l: LabLayout): ComponentSpec {
  return {
    name: 'kube-scheduler',
    netns: NODE_NETNS,
    stopGraceMs: 5_000,
    argv: [
      path.join(l.bin, 'kube-scheduler'),
      ...delegatedAuth(componentKubeconfig(l, 'scheduler')),
      '--v=1',
    ],
  };
}

export function kubeProxy(l: LabLayout): ComponentSpec {
  return {
    name: 'kube-proxy',
    netns: NODE_NETNS,
    stopGraceMs: 5_000,
    argv: [path.join(l.bin, 'kube-proxy'), `--config=${kubeProxyConfigFile(l)}`, '--v=1'],
  };
}

/** kube-proxy's configuration file (KubeProxyConfiguration). */
export function renderKubeProxyConfig(l: LabLayout): string {
  return stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig: componentKubeconfig(l, 'kube-proxy') },
    hostnameOverride: NODE_NAME,
    mode: 'iptables',
    clusterCIDR: CLUSTER_CIDR,
    detectLocalMode: 'ClusterCIDR',
    // Also how kube-proxy learns the node's IP without waiting for the Node object's addresses.
    bindAddress: NODE_IP,
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    nodePortAddresses: ['primary'],
    // nf_conntrack_max and the hashsize are global, read-only inside a network namespace: leave the
    // conntrack sysctls alone instead of failing to set them.
    conntrack: {
      maxPerCore: 0,
      min: 0,
      tcpEstablishedTimeout: '0s',
      tcpCloseWaitTimeout: '0s',
    },
    iptables: {
      // route_localnet would open NodePorts on the namespace's loopback; nothing here needs that.
      localhostNodePorts: false,
      masqueradeAll: false,
      syncPeriod: '30s',
      minSyncPeriod: '1s',
    },
  });
}

/**
 * containerd (Debian's) in the node's network namespace, so the CNI bridge and the pods' veths sit there.
 * nsenter --net only: the host's mounts (bpffs, cgroups) stay visible to it and to runc.
 */
export function containerd(l: LabLayout): ComponentSpec {
  return {
    name: 'containerd',
    netns: NODE_NETNS,
    // Running containers belong to their shims, not to containerd: its own stop is quick.
    stopGraceMs: 15_000,
    argv: ['containerd', `--config=${containerdConfigFile(l.paths)}`],
  };
}

/** The real kubelet (built with the control plane), registering node tplab-node with containerd as its runtime. */
export function kubelet(l: LabLayout): ComponentSpec {
  return {
    name: 'kubelet',
    netns: NODE_NETNS,
    stopGraceMs: 10_000,
    argv: [
      path.join(l.bin, 'kubelet'),
      `--config=${kubeletConfigFile(l.paths)}`,
      `--kubeconfig=${l.paths.kubeconfigNode}`,
      `--hostname-override=${NODE_NAME}`,
      `--node-ip=${NODE_IP}`,
      `--root-dir=${l.paths.kubelet}`,
      '--v=1',
    ],
  };
}

/** Inside tplab-node: the unix socket (reachable from any namespace) -> the API server's port. */
export function apiRelay(l: LabLayout): ComponentSpec {
  return {
    name: 'api-relay',
    netns: NODE_NETNS,
    stopGraceMs: 3_000,
    argv: [
      process.execPath,
      '--',
      l.labMain,
      'relay',
      `--listen=unix:${l.paths.apiRelaySocket}`,
      `--connect=tcp:127.0.0.1:${APISERVER_PORT}`,
    ],
  };
}

/** The root namespace's only lab socket: 127.0.0.1:<host port> -> the relay's unix socket. */
export function apiForward(l: LabLayout): ComponentSpec {
  return {
    name: 'api-forward',
    netns: null,
    stopGraceMs: 3_000,
    argv: [
      process.execPath,
      '--',
      l.labMain,
      'relay',
      `--listen=tcp:127.0.0.1:${l.hostApiPort}`,
      `--connect=unix:${l.paths.apiRelaySocket}`,
    ],
  };
}

export function componentSpec(name: ComponentName, l: LabLayout): ComponentSpec {
  switch (name) {
    case 'api-relay':
      return apiRelay(l);
    case 'api-forward':
      return apiForward(l);
    case 'etcd':
      return etcd(l);
    case 'kube-apiserver':
      return kubeApiserver(l);
    case 'kube-controller-manager':
      return kubeControllerManager(l);
    case 'kube-scheduler':
      return kubeScheduler(l);
    case 'kube-proxy':
      return kubeProxy(l);
    case 'containerd':
      return containerd(l);
    case 'kubelet':
      return kubelet(l);
  }
}

/** The command that actually runs: the argv, entered into its network namespace when it has one. */
export function launchArgv(spec: ComponentSpec): string[] {
  // nsenter (not `ip netns exec`): it changes only the network namespace. `ip netns exec` also
  // unshares the mount namespace, and then the pod namespaces the node agent mounts under
  // /run/netns would be invisible to everyone else (and to `tp-lab down`).
  if (spec.netns === null) return spec.argv;
  return ['nsenter', `--net=/run/netns/${spec.netns}`, '--', ...spec.argv];
}
