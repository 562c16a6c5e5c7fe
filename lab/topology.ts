// The lab's fixed facts (namespaces, addresses, CIDRs, ports): the contract of lab/README.md in code.
// The node agent (lab/node/) and the e2e harness read them from here rather than repeating them.

/** Network namespace of the control plane, kube-proxy, containerd, the kubelet and the pod bridge. */
export const NODE_NETNS = 'tplab-node';
/** Network namespace of the "workstation": reaches the API server, not the pod or service networks. */
export const WORKSTATION_NETNS = 'tplab-ws';
/** Every namespace the lab creates starts with this; `tp-lab down` removes all of them. */
export const NETNS_PREFIX = 'tplab-';

export const NODE_NAME = 'tplab-node';
/** The node's InternalIP, the API server's advertise address and the kubelet API's address. */
export const NODE_IP = '172.30.0.1';
export const WORKSTATION_IP = '172.30.0.2';
/** Prefix length of the node <-> workstation link. */
export const LINK_PREFIX = 30;
/** The veth end in tplab-node (172.30.0.1) and its peer in tplab-ws (172.30.0.2). */
export const NODE_LINK = 'tplab-ws0';
export const WORKSTATION_LINK = 'tplab-ws1';
/**
 * The pod bridge in tplab-node. `up` creates it with a fixed MAC before the kubelet starts; the CNI
 * bridge plugin adopts it and gives it the first address of the node's podCIDR (the pods' gateway).
 */
export const POD_BRIDGE = 'tplab0';
/** The CNI network's name (the conflist's `name`; also the prefix of CNI's cache entries). */
export const CNI_NETWORK = 'tplab';
/** The cgroup (under every cgroup v1 hierarchy) that holds every pod of the node: the kubelet's cgroupRoot. */
export const CGROUP_ROOT = 'tplab';
/** The sandbox ("pause") image containerd runs for every pod; the lab builds it (lab/images). */
export const PAUSE_IMAGE = 'registry.k8s.io/pause:3.10';
/** containerd's namespace for Kubernetes (the CRI plugin's). */
export const CONTAINERD_K8S_NAMESPACE = 'k8s.io';

export const CLUSTER_CIDR = '10.244.0.0/16';
export const NODE_CIDR_MASK = 24;
export const SERVICE_CIDR = '10.96.0.0/16';
export const KUBERNETES_SERVICE_IP = '10.96.0.1';
export const CLUSTER_DNS_IP = '10.96.0.10';
export const CLUSTER_DOMAIN = 'cluster.local';

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;
export const APISERVER_PORT = 6443;
export const KUBELET_PORT = 10250;
/** The kubelet's /healthz, on the node namespace's loopback. */
export const KUBELET_HEALTHZ_PORT = 10248;
/** The root namespace's only lab socket: 127.0.0.1:<this> forwards to the API server. */
export const DEFAULT_HOST_API_PORT = 16443;

/** The API server's URL as seen from the workstation namespace (and from inside tplab-node). */
export const WORKSTATION_API_URL = `https://${NODE_IP}:${APISERVER_PORT}`;
