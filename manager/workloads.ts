// Where the manager learns which workloads exist and which ports their agents capture. Standalone mode
// knows only the agents that arrived; the Kubernetes integration plugs in a source that watches the
// cluster's Deployments/StatefulSets/ReplicaSets behind the same interface.
import { ENV } from '../agentconfig/env.js';
import type { AgentInfo, AgentPort } from '../rpc/gen/manager.js';

export type AgentState = 'NO_AGENT' | 'INSTALLING' | 'INSTALLED' | 'ERROR';

export interface Workload {
  name: string;
  namespace: string;
  /** Deployment, StatefulSet, ReplicaSet, or Standalone. */
  kind: string;
  agentState: AgentState;
  agentMessage: string;
  /** The ports the workload's agents capture (app port -> agent port). */
  ports: AgentPort[];
  /** One agent per pod. */
  agents: AgentInfo[];
  replicas: number;
  readyReplicas: number;
  mechanism: string;
}

export interface WorkloadSource {
  /** Workloads in a namespace, or in every managed namespace when namespace is empty. */
  list(namespace: string): Workload[];
  get(name: string, namespace: string): Workload | undefined;
  /** Called on every change; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
  /** Why get() found nothing and what to do about it, for the user. */
  describeMissing(name: string, namespace: string): string;
}

export const workloadKey = (name: string, namespace: string) => `${namespace}/${name}`;

/** Standalone mode: a workload exists while at least one of its agents has a session. */
export class AgentWorkloads implements WorkloadSource {
  private readonly agentsBySession = new Map<string, AgentInfo>();
  private readonly listeners = new Set<() => void>();

  addAgent(sessionId: string, info: AgentInfo): void {
    this.agentsBySession.set(sessionId, info);
    this.changed();
  }

  removeAgent(sessionId: string): AgentInfo | undefined {
    const info = this.agentsBySession.get(sessionId);
    if (info && this.agentsBySession.delete(sessionId)) this.changed();
    return info;
  }

  list(namespace: string): Workload[] {
    const byKey = new Map<string, AgentInfo[]>();
    for (const a of this.agentsBySession.values()) {
      if (namespace && a.namespace !== namespace) continue;
      const key = workloadKey(a.name, a.namespace);
      byKey.set(key, [...(byKey.get(key) ?? []), a]);
    }
    return [...byKey.values()]
      .map((agents) => toWorkload(agents))
      .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  }

  get(name: string, namespace: string): Workload | undefined {
    const agents = [...this.agentsBySession.values()].filter(
      (a) => a.name === name && a.namespace === namespace,
    );
    return agents.length > 0 ? toWorkload(agents) : undefined;
  }

  describeMissing(name: string, namespace: string): string {
    return (
      `workload "${name}" not found in namespace "${namespace}": no agent of it has arrived at the traffic ` +
      `manager (standalone mode: start tp-agent with ${ENV.workloadName}=${name} ${ENV.namespace}=${namespace})`
    );
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }
}

function toWorkload(agents: AgentInfo[]): Workload {
  const first = agents[0]!;
  const ports = new Map<number, AgentPort>();
  for (const a of agents) for (const c of a.containers) for (const p of c.ports) ports.set(p.appPort, p);
  return {
    name: first.name,
    namespace: first.namespace,
    kind: first.kind || 'Standalone',
    agentState: 'INSTALLED',
    agentMessage: '',
    ports: [...ports.values()].sort((a, b) => a.appPort - b.appPort),
    agents: [...agents].sort((a, b) => a.podName.localeCompare(b.podName)),
    replicas: agents.length,
    readyReplicas: agents.length,
    mechanism: first.mechanism,
  };
}
