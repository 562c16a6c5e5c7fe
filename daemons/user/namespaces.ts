// Which namespaces a command acts in, pure. As Telepresence users expect: the namespace of `tp connect -n`
// (else the kubeconfig context's) is the default of every command; `--mapped-namespaces` limits tp to a
// set; Kubernetes' own namespaces and the traffic manager's are left out of listings unless asked for.
import type { WorkloadInfo } from '../../rpc/gen/manager.js';

/** Kubernetes' own namespaces: nothing a developer intercepts lives there. */
export const SYSTEM_NAMESPACES: readonly string[] = ['kube-system', 'kube-public', 'kube-node-lease'];

export interface NamespaceScope {
  /** The connected namespace: the default of every command. */
  connected: string;
  /** `tp connect --mapped-namespaces`: tp works only in these; empty: every managed namespace. */
  mapped: string[];
  /** The traffic manager's namespace: tp's own workloads, hidden like the system ones. */
  managerNamespace: string;
}

export interface ListScope {
  namespace: string;
  allNamespaces: boolean;
  includeSystem: boolean;
}

/** Why a namespace is out of bounds for this connection, or undefined when tp may act in it. */
export function unmappedReason(namespace: string, scope: NamespaceScope): string | undefined {
  if (scope.mapped.length === 0 || scope.mapped.includes(namespace)) return undefined;
  return `namespace "${namespace}" is not one this connection maps (${scope.mapped.join(', ')}): tp quit, then tp connect --mapped-namespaces with it`;
}

/** The namespace a command names, else the connected one; throws (a message for the user) when unmapped. */
export function commandNamespace(requested: string, scope: NamespaceScope): string {
  const namespace = requested || scope.connected || 'default';
  const reason = unmappedReason(namespace, scope);
  if (reason) throw new Error(reason);
  return namespace;
}

/** What to ask the manager for: one namespace, or '' for every one it manages (then filtered). */
export function managerListNamespace(req: ListScope, scope: NamespaceScope): string {
  if (req.allNamespaces) return scope.mapped.length === 1 ? scope.mapped[0]! : '';
  return commandNamespace(req.namespace, scope);
}

export function isSystemNamespace(namespace: string, scope: NamespaceScope): boolean {
  return SYSTEM_NAMESPACES.includes(namespace) || namespace === scope.managerNamespace;
}

/**
 * The workloads a listing shows. A namespace named explicitly shows all of it (also kube-system, if asked
 * for by name); across namespaces, only mapped ones, and system ones only with includeSystem.
 */
export function visibleWorkloads(
  workloads: WorkloadInfo[],
  req: ListScope,
  scope: NamespaceScope,
): WorkloadInfo[] {
  if (!req.allNamespaces) {
    const namespace = commandNamespace(req.namespace, scope);
    return workloads.filter((w) => w.namespace === namespace);
  }
  return workloads.filter(
    (w) =>
      unmappedReason(w.namespace, scope) === undefined &&
      (req.includeSystem || !isSystemNamespace(w.namespace, scope)),
  );
}
