// The names tp writes into Kubernetes objects: annotations on pod templates and pods, the names of
// the containers it injects (the agent's environment is agentconfig/'s).
// Everything an admin may meet in `kubectl get -o yaml` is defined here, in one place.

/** On a workload's pod template: "enabled" asks the webhook to inject the agent (the OnDemand policy). */
export const INJECT_ANNOTATION = 'tp.dev/inject-agent';
/**
 * On a workload's pod template, set by its owner: the capture mechanism the workload prefers, iptables
 * or ebpf (else the chart's default). tp reads it and never writes or removes it. On an injected pod,
 * the webhook records here the mechanism the pod's capture actually uses.
 */
export const MECHANISM_ANNOTATION = 'tp.dev/mechanism';
/**
 * On a workload's pod template, set by tp with INJECT_ANNOTATION: the capture mechanism of the agent tp
 * installed (one asked for in EnsureAgent, else the owner's choice, else the chart default). Removed with
 * the agent, so uninstalling leaves the owner's MECHANISM_ANNOTATION as it was.
 */
export const AGENT_MECHANISM_ANNOTATION = 'tp.dev/agent-mechanism';
/** On a workload's pod template: changed to roll the pods when the agent is installed or removed. */
export const RESTARTED_AT_ANNOTATION = 'tp.dev/restartedAt';
/**
 * On a workload's pod template, optional: extra ports to capture, comma-separated, for a Service whose
 * numeric targetPort no container declares. Set by EnsureAgent when it finds such a Service.
 */
export const CAPTURE_PORTS_ANNOTATION = 'tp.dev/capture-ports';

/** On an injected pod: the tp version that injected it. */
export const INJECTED_ANNOTATION = 'tp.dev/injected';
/** On an injected pod: the captured ports as appPort:agentPort[,…] (the agent's TP_PORTS). */
export const PORTS_ANNOTATION = 'tp.dev/ports';
/**
 * On an injected pod: the kubelet probes the webhook rewrote to the agent's probe port, as
 * container/kind[,…] (e.g. `echo/readiness,echo/liveness`); absent when none was.
 */
export const PROBES_REWRITTEN_ANNOTATION = 'tp.dev/probes-rewritten';
/**
 * On an injected pod: the network probes left as written and why, as `container/kind: reason[; …]` (a
 * host that is not the pod, a named port the container does not declare, a port that is not captured).
 */
export const PROBES_NOT_REWRITTEN_ANNOTATION = 'tp.dev/probes-not-rewritten';
/** On a pod the webhook saw but could not inject: why (no owner, no ports). */
export const NOT_INJECTED_ANNOTATION = 'tp.dev/not-injected';

/**
 * On an injected pod, a label: the pod runs tp's agent. The chart's NetworkPolicy lets pods with it reach
 * the manager's gRPC port.
 */
export const AGENT_LABEL = 'tp.dev/agent';
export const AGENT_LABEL_VALUE = 'injected';

/**
 * In the agent container: the projected ServiceAccount token, bound to the pod, with the manager's
 * audience, that the agent arrives with (TP_MANAGER_TOKEN_FILE).
 */
export const AGENT_TOKEN_VOLUME = 'tp-manager-token';
export const AGENT_TOKEN_DIR = '/var/run/secrets/tp.dev/manager';
export const AGENT_TOKEN_FILE = `${AGENT_TOKEN_DIR}/token`;
/**
 * Where the agent sees each app container's volumes: AGENT_MOUNTS_DIR/<container>/<mountPath>, served to
 * the owner of an intercept or ingest over SFTP (remote mounts; agent/file-server.ts MOUNTS_DIR, the
 * same value: the agent does not import kube/).
 */
export const AGENT_MOUNTS_DIR = '/tp/mounts';

/** The value of INJECT_ANNOTATION that turns injection on. */
export const INJECT_ENABLED = 'enabled';

/** Whether the pod (or pod template) metadata asks for the agent. */
export function injectionRequested(annotations: Record<string, string> | undefined): boolean {
  return annotations?.[INJECT_ANNOTATION] === INJECT_ENABLED;
}

export const AGENT_CONTAINER = 'tp-agent';
export const INIT_CONTAINER = 'tp-init';

export const MECHANISMS = ['iptables', 'ebpf'] as const;
export type Mechanism = (typeof MECHANISMS)[number];

export function isMechanism(value: string): value is Mechanism {
  return (MECHANISMS as readonly string[]).includes(value);
}

/** Label selecting the traffic manager's pods (set by the chart). */
export const MANAGER_LABEL_SELECTOR = 'app.kubernetes.io/name=traffic-manager';
export const MANAGER_SERVICE = 'traffic-manager';
export const DEFAULT_MANAGER_NAMESPACE = 'tp-system';
export const DEFAULT_MANAGER_GRPC_PORT = 8081;

/** The session API (the manager's aggregated API, manager/kubernetes/session-api.ts): its version and resource. */
export const SESSION_API_VERSION = 'v1alpha1';
export const SESSION_TOKEN_RESOURCE = 'sessiontokens';
export const SESSION_TOKEN_KIND = 'SessionToken';

/** The session API group of one install: the manager's namespace makes two installs' groups differ. */
export function sessionApiGroup(managerNamespace: string): string {
  return `${managerNamespace}.sessions.tp.dev`;
}
