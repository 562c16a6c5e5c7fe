// What tp knows about one workload, derived purely from the Kubernetes objects the informers hold: its
// ports, its pods, and the agent's state. The interesting part is the agent state, because it is what
// turns "timed out waiting for agent" into an answer: each pod records whether the webhook injected
// it, refused it (and why), or never saw it (the webhook was unreachable).
import type {
  V1Container,
  V1ContainerStatus,
  V1Deployment,
  V1OwnerReference,
  V1Pod,
  V1PodTemplateSpec,
  V1ReplicaSet,
  V1Service,
  V1StatefulSet,
} from '@kubernetes/client-node';
import {
  AGENT_CONTAINER,
  AGENT_MECHANISM_ANNOTATION,
  CAPTURE_PORTS_ANNOTATION,
  INIT_CONTAINER,
  injectionRequested,
  isMechanism,
  MECHANISM_ANNOTATION,
  type Mechanism,
  NOT_INJECTED_ANNOTATION,
  PORTS_ANNOTATION,
  RESTARTED_AT_ANNOTATION,
} from './annotations.js';

export type WorkloadKind = 'Deployment' | 'ReplicaSet' | 'StatefulSet';
export const WORKLOAD_KINDS: readonly WorkloadKind[] = ['Deployment', 'ReplicaSet', 'StatefulSet'];

export type WorkloadObject = V1Deployment | V1ReplicaSet | V1StatefulSet;

/** NO_AGENT, INSTALLING (pods rolling), INSTALLED (every live pod has a ready agent), ERROR. */
export type AgentState = 'NO_AGENT' | 'INSTALLING' | 'INSTALLED' | 'ERROR';

export interface WorkloadPort {
  /** The container port's name, or "" for a numeric Service targetPort no container declares. */
  name: string;
  port: number;
  protocol: string;
  container: string;
  /** Services whose targetPort reaches this port. */
  services: string[];
  /** Those Services' ports (an intercept may name one: `--port 8080:http`, `--service`). */
  servicePorts: { service: string; name: string; port: number }[];
}

export interface WorkloadPod {
  name: string;
  ip: string;
  phase: string;
  ready: boolean;
  terminating: boolean;
  /** The pod's own copy of the template annotation: it was created while injection was asked for. */
  requested: boolean;
  hasAgent: boolean;
  agentReady: boolean;
  hasInit: boolean;
  /** Why the webhook refused to inject it, if it did. */
  notInjected: string;
  /** The captured ports as the webhook recorded them (appPort:agentPort,…). */
  capturedPorts: string;
  mechanism: string;
  /** Why tp-init or the agent container fails in this pod (crash loop, non-zero exit), if they do. */
  failure: string;
  /** The restartedAt stamp of the template the pod was created from. */
  rollout: string;
}

export interface Workload {
  kind: WorkloadKind;
  name: string;
  namespace: string;
  uid: string;
  replicas: number;
  readyReplicas: number;
  /** The pod template asks for the agent. */
  agentRequested: boolean;
  /** The template's restartedAt stamp (tp's last rollout of it), or "". */
  rollout: string;
  mechanism: Mechanism;
  agentState: AgentState;
  agentMessage: string;
  ports: WorkloadPort[];
  pods: WorkloadPod[];
  labels: Record<string, string>;
}

export function podTemplate(obj: WorkloadObject): V1PodTemplateSpec | undefined {
  return obj.spec?.template;
}

function isAgentOrInit(c: V1Container): boolean {
  return c.name === AGENT_CONTAINER || c.name === INIT_CONTAINER;
}

/** The workload a pod belongs to, following ReplicaSet → Deployment; undefined for bare pods. */
export function ownerOfPod(
  pod: V1Pod,
  replicaSet: (namespace: string, name: string) => V1ReplicaSet | undefined,
): { kind: WorkloadKind; name: string } | undefined {
  return ownerFromRefs(pod.metadata?.namespace ?? '', pod.metadata?.ownerReferences, replicaSet);
}

export function ownerFromRefs(
  namespace: string,
  refs: V1OwnerReference[] | undefined,
  replicaSet: (namespace: string, name: string) => V1ReplicaSet | undefined,
): { kind: WorkloadKind; name: string } | undefined {
  const ref = refs?.find((r) => r.controller);
  if (!ref) return undefined;
  if (ref.kind === 'StatefulSet') return { kind: 'StatefulSet', name: ref.name };
  if (ref.kind !== 'ReplicaSet') return undefined;
  const rs = replicaSet(namespace, ref.name);
  const parent = rs?.metadata?.ownerReferences?.find((r) => r.controller);
  if (parent?.kind === 'Deployment') return { kind: 'Deployment', name: parent.name };
  // A ReplicaSet owned by something else (e.g. an Argo Rollout) is not a workload tp can roll.
  if (parent) return undefined;
  // Not (yet) in the cache: a ReplicaSet named <deployment>-<hash> is the common case, but only the
  // object can tell; the caller looks it up and calls again.
  if (!rs) return undefined;
  return { kind: 'ReplicaSet', name: ref.name };
}

/** Whether a Service's selector picks the pods of this template. */
export function serviceSelects(service: V1Service, labels: Record<string, string>): boolean {
  const selector = service.spec?.selector;
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** The ports a workload exposes: declared TCP container ports, plus numeric Service targetPorts. */
export function workloadPorts(
  template: V1PodTemplateSpec | undefined,
  services: V1Service[],
): WorkloadPort[] {
  const labels = template?.metadata?.labels ?? {};
  const containers = (template?.spec?.containers ?? []).filter((c) => !isAgentOrInit(c));
  const ports: WorkloadPort[] = [];
  for (const c of containers) {
    for (const p of c.ports ?? []) {
      const protocol = p.protocol ?? 'TCP';
      if (protocol !== 'TCP' || ports.some((x) => x.port === p.containerPort)) continue;
      ports.push({
        name: p.name ?? '',
        port: p.containerPort,
        protocol,
        container: c.name,
        services: [],
        servicePorts: [],
      });
    }
  }
  const extra = template?.metadata?.annotations?.[CAPTURE_PORTS_ANNOTATION] ?? '';
  for (const s of extra.split(',')) {
    const port = Number(s.trim());
    if (!Number.isInteger(port) || port < 1 || port > 65535 || ports.some((x) => x.port === port)) continue;
    ports.push({
      name: '',
      port,
      protocol: 'TCP',
      container: containers[0]?.name ?? '',
      services: [],
      servicePorts: [],
    });
  }
  for (const svc of services) {
    if (!serviceSelects(svc, labels)) continue;
    for (const sp of svc.spec?.ports ?? []) {
      if ((sp.protocol ?? 'TCP') !== 'TCP') continue;
      const target = sp.targetPort ?? sp.port;
      const serviceName = svc.metadata?.name ?? '';
      const ref = { service: serviceName, name: sp.name ?? '', port: sp.port };
      const match =
        typeof target === 'number' || /^\d+$/.test(String(target))
          ? ports.find((p) => p.port === Number(target))
          : ports.find((p) => p.name === target);
      if (match) {
        if (!match.services.includes(serviceName)) match.services.push(serviceName);
        match.servicePorts.push(ref);
      } else if (typeof target === 'number' || /^\d+$/.test(String(target))) {
        // A numeric targetPort no container declares still reaches the app: capture it too.
        ports.push({
          name: '',
          port: Number(target),
          protocol: 'TCP',
          container: containers[0]?.name ?? '',
          services: [serviceName],
          servicePorts: [ref],
        });
      }
    }
  }
  return ports;
}

/** Ports the webhook would not capture from the containers alone (EnsureAgent writes them down). */
export function undeclaredServicePorts(
  template: V1PodTemplateSpec | undefined,
  services: V1Service[],
): number[] {
  const declared = new Set(
    (template?.spec?.containers ?? []).flatMap((c) => (c.ports ?? []).map((p) => p.containerPort)),
  );
  return workloadPorts(template, services)
    .filter((p) => !declared.has(p.port))
    .map((p) => p.port);
}

/**
 * Why one of our containers keeps a pod from working, or "": it cannot start (image, config), tp-init
 * exited non-zero (the pod cannot start until it succeeds), or the agent crash-loops.
 */
export function containerFailure(
  podName: string,
  namespace: string,
  status: V1ContainerStatus | undefined,
): string {
  if (!status) return '';
  const waiting = status.state?.waiting;
  if (waiting?.reason && /ErrImage|ImagePull|CreateContainer|InvalidImageName/.test(waiting.reason)) {
    return `${status.name} cannot start in pod ${podName}: ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}`;
  }
  const terminated = status.state?.terminated ?? status.lastState?.terminated;
  if (!terminated || terminated.exitCode === 0) return '';
  // An agent that failed once and runs again is fine; one that stays down or loops is not.
  if (status.name === AGENT_CONTAINER && !status.state?.terminated && waiting?.reason !== 'CrashLoopBackOff')
    return '';
  const detail = (terminated.message ?? '').trim().split('\n').filter(Boolean).slice(-3).join(' | ');
  const why = `exit ${terminated.exitCode}${terminated.reason ? `, ${terminated.reason}` : ''}`;
  return `${status.name} failed in pod ${podName} (${why})${detail ? `: ${detail}` : ''}; see kubectl logs -n ${namespace} ${podName} -c ${status.name}`;
}

export function podState(pod: V1Pod): WorkloadPod {
  const annotations = pod.metadata?.annotations ?? {};
  const statuses = pod.status?.containerStatuses ?? [];
  const agentStatus = statuses.find((s) => s.name === AGENT_CONTAINER);
  const initStatus = pod.status?.initContainerStatuses?.find((s) => s.name === INIT_CONTAINER);
  const name = pod.metadata?.name ?? '';
  const namespace = pod.metadata?.namespace ?? 'default';
  const failure =
    containerFailure(name, namespace, initStatus) || containerFailure(name, namespace, agentStatus);
  return {
    name,
    ip: pod.status?.podIP ?? '',
    phase: pod.status?.phase ?? 'Pending',
    ready: pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    terminating: !!pod.metadata?.deletionTimestamp,
    requested: injectionRequested(annotations),
    hasAgent: pod.spec?.containers.some((c) => c.name === AGENT_CONTAINER) ?? false,
    agentReady: agentStatus?.ready ?? false,
    hasInit: pod.spec?.initContainers?.some((c) => c.name === INIT_CONTAINER) ?? false,
    notInjected: annotations[NOT_INJECTED_ANNOTATION] ?? '',
    capturedPorts: annotations[PORTS_ANNOTATION] ?? '',
    mechanism: annotations[MECHANISM_ANNOTATION] ?? '',
    failure,
    rollout: annotations[RESTARTED_AT_ANNOTATION] ?? '',
  };
}

export const WEBHOOK_UNREACHABLE =
  'agent not injected: webhook unreachable: pod %POD% started without the agent (the API server could not call the traffic-manager-webhook Service, so failurePolicy Ignore let the pod start unchanged); check that the traffic-manager pod is ready and its logs, then run the intercept again';

/**
 * The agent state of a workload from its template and its pods. `rollout` is the template's
 * restartedAt stamp: only pods created from the current template can make the state an error (pods
 * of an earlier rollout are on their way out); without a stamp every pod counts.
 */
export function agentState(
  requested: boolean,
  desiredReplicas: number,
  pods: WorkloadPod[],
  rollout = '',
): { state: AgentState; message: string } {
  const live = pods.filter((p) => !p.terminating && p.phase !== 'Succeeded' && p.phase !== 'Failed');
  const withAgent = live.filter((p) => p.hasAgent);
  const current = rollout === '' ? live : live.filter((p) => p.rollout === rollout);
  if (!requested) {
    if (withAgent.length > 0) {
      return {
        state: 'NO_AGENT',
        message: `removing the agent: ${withAgent.length} of ${live.length} pods still have it`,
      };
    }
    return { state: 'NO_AGENT', message: '' };
  }
  const refused = current.find((p) => p.requested && !p.hasAgent && p.notInjected !== '');
  if (refused) return { state: 'ERROR', message: refused.notInjected };
  const failed = current.find((p) => p.hasAgent && p.failure !== '');
  if (failed) return { state: 'ERROR', message: failed.failure };
  const missed = current.find((p) => p.requested && !p.hasAgent);
  if (missed) return { state: 'ERROR', message: WEBHOOK_UNREACHABLE.replace('%POD%', missed.name) };
  if (desiredReplicas === 0) {
    return { state: 'ERROR', message: 'the workload is scaled to 0 replicas: scale it up to intercept it' };
  }
  const ready = withAgent.filter((p) => p.agentReady && p.ready && p.ip !== '');
  if (withAgent.length === live.length && ready.length >= desiredReplicas) {
    return { state: 'INSTALLED', message: '' };
  }
  return {
    state: 'INSTALLING',
    message: `rolling out: ${ready.length} of ${desiredReplicas} pods run the agent`,
  };
}

/** Deployments, ReplicaSets and StatefulSets all default to 1 replica. */
export function desiredReplicas(obj: WorkloadObject): number {
  return obj.spec?.replicas ?? 1;
}

export function buildWorkload(
  kind: WorkloadKind,
  obj: WorkloadObject,
  pods: V1Pod[],
  services: V1Service[],
  defaultMechanism: Mechanism,
): Workload {
  const template = podTemplate(obj);
  const annotations = template?.metadata?.annotations ?? {};
  const requested = injectionRequested(annotations);
  const m =
    (requested ? annotations[AGENT_MECHANISM_ANNOTATION] : undefined) ??
    annotations[MECHANISM_ANNOTATION] ??
    '';
  const podStates = pods.map(podState).sort((a, b) => a.name.localeCompare(b.name));
  const replicas = desiredReplicas(obj);
  const { state, message } = agentState(
    requested,
    replicas,
    podStates,
    annotations[RESTARTED_AT_ANNOTATION] ?? '',
  );
  return {
    kind,
    name: obj.metadata?.name ?? '',
    namespace: obj.metadata?.namespace ?? '',
    uid: obj.metadata?.uid ?? '',
    replicas,
    readyReplicas: obj.status?.readyReplicas ?? 0,
    agentRequested: requested,
    rollout: annotations[RESTARTED_AT_ANNOTATION] ?? '',
    mechanism: isMechanism(m) ? m : defaultMechanism,
    agentState: state,
    agentMessage: message,
    ports: workloadPorts(template, services),
    pods: podStates,
    labels: template?.metadata?.labels ?? {},
  };
}

/**
 * The workload port an intercept names (a number or a container port name; empty: the only port),
 * or a message saying what the workload does expose.
 */
export function findWorkloadPort(
  workload: Pick<Workload, 'kind' | 'name' | 'ports'>,
  wanted: string | number | undefined,
): { port: WorkloadPort } | { error: string } {
  const list = workload.ports.map((p) => (p.name ? `${p.port} (${p.name})` : `${p.port}`)).join(', ');
  const what = `${workload.kind} ${workload.name}`;
  if (workload.ports.length === 0) {
    return {
      error: `${what} exposes no TCP port: declare one in its container's ports (or give it a Service) to intercept it`,
    };
  }
  if (wanted === undefined || wanted === '' || wanted === 0) {
    if (workload.ports.length === 1) return { port: workload.ports[0]! };
    return { error: `${what} exposes several ports (${list}): name one with --port LOCAL:REMOTE` };
  }
  const port =
    typeof wanted === 'number' || /^\d+$/.test(wanted)
      ? workload.ports.find((p) => p.port === Number(wanted))
      : workload.ports.find((p) => p.name === wanted);
  if (!port) return { error: `${what} does not expose port ${wanted}: its ports are ${list}` };
  return { port };
}
