// What the manager asks of a cluster integration (Kubernetes: kube/manager-integration.ts). Standalone
// mode has none: workloads are the agents that arrive, and there is nothing to install or resolve.
import type { AgentInfo, ClusterInfo, DNSResponse } from '../rpc/gen/manager.js';
import type { AgentWorkloads, WorkloadSource } from './workloads.js';

export interface ClusterIntegration {
  /** The cluster's workloads; the core tells it which agents have a session. */
  workloads: WorkloadSource & Pick<AgentWorkloads, 'addAgent' | 'removeAgent'>;
  /** Installs the agent into a workload if needed and resolves when its agents have arrived. */
  ensureAgent(name: string, namespace: string, mechanism: string): Promise<AgentInfo[]>;
  /** Removes the agent from the named workloads (or all); resolves when their pods rolled. */
  uninstallAgents(names: string[], namespace: string, all: boolean): Promise<string[]>;
  clusterInfo(): ClusterInfo;
  onClusterInfoChange(listener: () => void): () => void;
  lookupDns(name: string, qtype: number): Promise<DNSResponse>;
  stop(): Promise<void>;
}
