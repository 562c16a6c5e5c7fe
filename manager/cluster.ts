// What the manager asks of a cluster integration (Kubernetes: kubernetes/manager-integration.ts). Standalone
// mode has none: workloads are the agents that arrive, and there is nothing to install or resolve.

import type { Upstream } from '../dns/forwarder.js';
import type { Cidr } from '../netaddr/parse.js';
import type { AgentInfo, ClusterInfo } from '../rpc/gen/manager.js';
import type { AgentVerifier, Authorizer, SecurityMode } from './access-control.js';
import type { AgentWorkloads, WorkloadSource } from './workloads.js';

/** What the cluster contributes to the manager's access control (access-control.ts). */
export interface ClusterAccess {
  /** The chart's security.mode: enforcing or permissive. */
  mode: SecurityMode;
  authorizer: Authorizer;
  agents: AgentVerifier;
  /** Where a workstation's outbound flows may go: the cluster's networks and the chart's extra CIDRs. */
  reachable(): Cidr[];
}

export interface ClusterIntegration {
  /** The cluster's workloads; the core tells it which agents have a session. */
  workloads: WorkloadSource & Pick<AgentWorkloads, 'addAgent' | 'removeAgent'>;
  /** Installs the agent into a workload if needed and resolves when its agents have arrived. */
  ensureAgent(name: string, namespace: string, mechanism: string): Promise<AgentInfo[]>;
  /** Removes the agent from the named workloads (or all); resolves when their pods rolled. */
  uninstallAgents(names: string[], namespace: string, all: boolean): Promise<string[]>;
  /** The cluster's facts (the manager adds what it serves itself: flow connections). */
  clusterInfo(): Omit<ClusterInfo, 'flowConnections' | 'flowWindows'>;
  onClusterInfoChange(listener: () => void): () => void;
  /** The cluster's DNS servers (the kube-dns Service): LookupDNS asks them (dns/cluster-lookup.ts). */
  dnsServers(): Upstream[];
  access: ClusterAccess;
  stop(): Promise<void>;
}
