// What each action of a workstation needs in Kubernetes RBAC terms, pure: the decision table the manager
// checks with SubjectAccessReviews for the user of the session (kubernetes/access-review.ts), and the message a
// refused user reads. The rule is "what doing it by hand would need":
//
//   action                            | needs (every row)
//   ----------------------------------+------------------------------------------------------------
//   intercept W in N                  | patch <W's kind> W in N; create pods/portforward in N
//   install the agent into W in N     | patch <W's kind> W in N
//   remove the agent from W in N      | patch <W's kind> W in N
//   remove the agent from all of N    | patch deployments, replicasets, statefulsets in N ("" = all)
//   see N's workloads of a kind       | list <kind> in N (tp list, the agents' list)
//   end others' intercepts of W in N  | delete intercepts.tp.dev W in N (an admin's revoke; tp revoke)
//
// Ending one's own intercept is not in the table: RemoveIntercept finds only the caller session's (the
// intercept table is keyed by session). Ending someone else's is the separate revoke above.
import type { Identity } from './credentials.js';

/** One SubjectAccessReview's resource attributes. */
export interface ResourceCheck {
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  /** '' = every namespace. */
  namespace: string;
  name?: string;
}

export interface WorkloadRef {
  name: string;
  namespace: string;
  /** Deployment, StatefulSet or ReplicaSet. */
  kind: string;
}

export type Action =
  | { kind: 'intercept'; workload: WorkloadRef }
  | { kind: 'install-agent'; workload: WorkloadRef }
  | { kind: 'uninstall-agent'; workload: WorkloadRef }
  | { kind: 'uninstall-all-agents'; namespace: string }
  | { kind: 'list-workloads'; namespace: string; workloadKind: string }
  | { kind: 'revoke-intercepts'; workload: WorkloadRef };

/**
 * The RBAC resource an admin's revoke needs: no such API exists, RBAC rules name it all the same (the
 * chart's ClusterRole tp-intercept-admin grants it).
 */
export const INTERCEPTS_GROUP = 'tp.dev';
export const INTERCEPTS_RESOURCE = 'intercepts';

/** The API group and resource of a workload kind. */
export function workloadResource(kind: string): { group: string; resource: string } {
  switch (kind) {
    case 'Deployment':
      return { group: 'apps', resource: 'deployments' };
    case 'StatefulSet':
      return { group: 'apps', resource: 'statefulsets' };
    case 'ReplicaSet':
      return { group: 'apps', resource: 'replicasets' };
    default:
      // Not a kind tp installs agents into: a resource no rule grants by accident.
      return { group: 'apps', resource: `${kind.toLowerCase()}s` };
  }
}

const patchWorkload = (w: WorkloadRef): ResourceCheck => ({
  verb: 'patch',
  ...workloadResource(w.kind),
  namespace: w.namespace,
  name: w.name,
});

export function requiredChecks(action: Action): ResourceCheck[] {
  switch (action.kind) {
    case 'intercept':
      return [
        patchWorkload(action.workload),
        {
          verb: 'create',
          group: '',
          resource: 'pods',
          subresource: 'portforward',
          namespace: action.workload.namespace,
        },
      ];
    case 'install-agent':
    case 'uninstall-agent':
      return [patchWorkload(action.workload)];
    case 'uninstall-all-agents':
      return ['Deployment', 'ReplicaSet', 'StatefulSet'].map((kind) => ({
        verb: 'patch',
        ...workloadResource(kind),
        namespace: action.namespace,
      }));
    case 'list-workloads':
      return [{ verb: 'list', ...workloadResource(action.workloadKind), namespace: action.namespace }];
    case 'revoke-intercepts':
      return [
        {
          verb: 'delete',
          group: INTERCEPTS_GROUP,
          resource: INTERCEPTS_RESOURCE,
          namespace: action.workload.namespace,
          name: action.workload.name,
        },
      ];
  }
}

/** "intercept N/W", as the refusal names the action. */
export function describeAction(action: Action): string {
  switch (action.kind) {
    case 'intercept':
      return `intercept ${action.workload.namespace}/${action.workload.name}`;
    case 'install-agent':
      return `install the agent into ${action.workload.namespace}/${action.workload.name}`;
    case 'uninstall-agent':
      return `remove the agent from ${action.workload.namespace}/${action.workload.name}`;
    case 'uninstall-all-agents':
      return action.namespace
        ? `remove the agents from every workload in ${action.namespace}`
        : 'remove the agents from every workload';
    case 'list-workloads':
      return `see the ${workloadResource(action.workloadKind).resource} in ${action.namespace}`;
    case 'revoke-intercepts':
      return `end other users' intercepts of ${action.workload.namespace}/${action.workload.name}`;
  }
}

/**
 * "patch deployments in N", "create pods/portforward in N", "patch deployments in any namespace",
 * "delete intercepts.tp.dev in N" (groups other than core and apps are named, as kubectl does).
 */
export function describeCheck(c: ResourceCheck): string {
  const named = c.group && c.group !== 'apps' ? `${c.resource}.${c.group}` : c.resource;
  const resource = c.subresource ? `${named}/${c.subresource}` : named;
  return `${c.verb} ${resource} in ${c.namespace || 'any namespace'}`;
}

export type Decision = { allowed: true } | { allowed: false; missing: ResourceCheck; message: string };

/**
 * The decision for an action, given which checks the cluster allowed (one answer per requiredChecks()
 * entry, in order): the first missing permission is the one the user is told about.
 */
export function decide(identity: Identity, action: Action, answers: boolean[]): Decision {
  const checks = requiredChecks(action);
  const i = checks.findIndex((_, k) => answers[k] !== true);
  if (i < 0) return { allowed: true };
  const missing = checks[i]!;
  return {
    allowed: false,
    missing,
    message: `not allowed to ${describeAction(action)}: user ${identity.user} cannot ${describeCheck(missing)}`,
  };
}
