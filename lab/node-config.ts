// The lab node's configuration files: containerd's config.toml, the kubelet's KubeletConfiguration and
// the CNI network. Pure functions of the state layout, the binaries and the topology, so every setting
// is reviewed (and unit-tested) in one place; `up` writes them, components.ts starts the processes.
import * as path from 'node:path';
import { stringify } from 'yaml';
import { parseCidr } from '../netaddr/parse.js';
import type { LabPaths } from './paths.js';
import {
  CGROUP_ROOT,
  CLUSTER_DNS_IP,
  CLUSTER_DOMAIN,
  CNI_NETWORK,
  KUBELET_HEALTHZ_PORT,
  KUBELET_PORT,
  NODE_IP,
  PAUSE_IMAGE,
  POD_BRIDGE,
} from './topology.js';

/** A TOML basic string (JSON's escapes are TOML's for everything a path or an image name holds). */
const toml = (s: string) => JSON.stringify(s);

export const containerdConfigFile = (p: LabPaths) => path.join(p.config, 'containerd.toml');
export const kubeletConfigFile = (p: LabPaths) => path.join(p.config, 'kubelet.yaml');
export const nodeResolvConfFile = (p: LabPaths) => path.join(p.config, 'node-resolv.conf');
export const cniConflistFile = (p: LabPaths) => path.join(p.cniConf, `10-${CNI_NETWORK}.conflist`);

/**
 * containerd 1.6 (Debian's) for one Kubernetes node: everything under the lab's state directory
 * (root, state, socket, the pods' network namespaces), runc with cgroupfs, the lab's CNI plugins.
 */
export function renderContainerdConfig(p: LabPaths, cniBinDir: string): string {
  return `# Written by tp-lab up: containerd for the lab's node (lab/README.md).
version = 2
root = ${toml(p.containerdRoot)}
state = ${toml(p.containerdState)}
# Nothing here uses them; without this containerd logs a warning per plugin at every start.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = ${toml(p.containerdSocket)}

[plugins."io.containerd.internal.v1.opt"]
  path = ${toml(path.join(p.containerdRoot, 'opt'))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${toml(PAUSE_IMAGE)}
  # Hosts without CAP_SYS_RESOURCE (this machine kind) cannot lower oom_score_adj: without this every
  # sandbox fails with runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # The pods' network namespaces live in the state directory, not /run/netns: \`tp-lab down\` finds
  # (and unmounts) every one of them there, and \`ip netns list\` shows only the lab's own.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = ${toml(path.join(p.containerdState, 'runc'))}
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${toml(cniBinDir)}
    conf_dir = ${toml(p.cniConf)}
    max_conf_num = 1
`;
}

/**
 * The kubelet's configuration: the lab PKI for its API (client certificates checked against the lab CA,
 * requests authorized by the API server), cgroupfs under one cgroup of the lab's own, every path under
 * the state directory, and no image garbage collection (nothing can be pulled again here).
 */
export function renderKubeletConfig(p: LabPaths, runtimeEndpoint = `unix://${p.containerdSocket}`): string {
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: NODE_IP,
    port: KUBELET_PORT,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: KUBELET_HEALTHZ_PORT,
    tlsCertFile: path.join(p.pki, 'node-serving.crt'),
    tlsPrivateKeyFile: path.join(p.pki, 'node-serving.key'),
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: path.join(p.pki, 'ca.crt') },
    },
    authorization: { mode: 'Webhook' },
    containerRuntimeEndpoint: runtimeEndpoint,
    imageServiceEndpoint: runtimeEndpoint,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: `/${CGROUP_ROOT}`,
    cgroupsPerQOS: true,
    failSwapOn: false,
    clusterDNS: [CLUSTER_DNS_IP],
    clusterDomain: CLUSTER_DOMAIN,
    // The pods' resolv.conf takes its search list and options from here (dnsPolicy Default: all of it).
    resolvConf: nodeResolvConfFile(p),
    podLogsDir: p.podLogs,
    volumePluginDir: path.join(p.kubelet, 'volume-plugins'),
    // A busy disk of a development machine must not evict the lab's pods.
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
    // Images are imported, never pulled: garbage-collecting one would break every pod that uses it.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    serializeImagePulls: false,
    // No systemd-logind here.
    shutdownGracePeriod: '0s',
    shutdownGracePeriodCriticalPods: '0s',
    rotateCertificates: false,
    serverTLSBootstrap: false,
  });
}

/** The node's resolv.conf, for the pods' search list: the lab reaches no resolver outside the cluster. */
export function renderNodeResolvConf(): string {
  return '# Written by tp-lab up: the lab node has no upstream resolver.\nnameserver 127.0.0.1\n';
}

/** The first address of a CIDR (the bridge's, the pods' gateway). */
export function gatewayOf(podCidr: string): string {
  const { address } = parseCidr(podCidr, 'podCIDR');
  const parts = address.split('.').map(Number);
  if (parts.length !== 4) throw new Error(`podCIDR ${podCidr}: the lab's pod network is IPv4`);
  parts[3] = (parts[3] ?? 0) + 1;
  return parts.join('.');
}

/**
 * The CNI network for the node's podCIDR (the controller-manager allocates it; `up` writes this once the
 * Node has one, which is when the kubelet reports the node Ready): the bridge `tplab0` with the pods'
 * gateway, host-local addresses, hairpin (a pod reaching itself through a Service), and portmap.
 */
export function renderCniConflist(p: LabPaths, podCidr: string): string {
  return `${JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: CNI_NETWORK,
      plugins: [
        {
          type: 'bridge',
          bridge: POD_BRIDGE,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: podCidr, gateway: gatewayOf(podCidr) }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: p.cniIpam,
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  )}\n`;
}

/** The bridge's MAC: fixed (0a:58 + the gateway's IPv4 bytes), so pods' cached gateway entries never go stale. */
export function bridgeMac(gateway: string): string {
  const hex = gateway.split('.').map((b) => Number(b).toString(16).padStart(2, '0'));
  return ['0a', '58', ...hex].join(':');
}
