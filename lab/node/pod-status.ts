// A pod's status as the kubelet reports it: phase (kubelet getPhase), conditions, and the container
// statuses, computed from what the node agent knows about the pod's processes. Pure.
import type { V1Pod, V1PodCondition } from '@kubernetes/client-node';

export interface TerminatedState {
  exitCode: number;
  signal?: number;
  reason: string;
  message?: string;
  startedAt: string;
  finishedAt: string;
  containerId: string;
}

export type ContainerState =
  | { kind: 'waiting'; reason: string; message?: string }
  | { kind: 'running'; startedAt: string; containerId: string }
  | ({ kind: 'terminated' } & TerminatedState);

export interface ContainerView {
  name: string;
  image: string;
  /** Empty until the image was "pulled" (resolved through the image table). */
  imageId: string;
  state: ContainerState;
  lastTermination?: TerminatedState;
  restartCount: number;
  ready: boolean;
  /** The startup probe passed (or there is none) and the container runs. */
  started: boolean;
  /** A sidecar: an init container with restartPolicy Always. */
  restartable: boolean;
}

export interface PodView {
  sandboxReady: boolean;
  podIP: string | undefined;
  hostIP: string;
  startTime: string | undefined;
  initContainers: ContainerView[];
  containers: ContainerView[];
  /** The pod is being torn down or has finished: containers will not be restarted. */
  terminal: boolean;
}

export type PodPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed';

/** metav1.Time's wire format: RFC 3339, whole seconds. */
export function timestamp(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, 'Z');
}

/** kubelet getPhase: from the pod's restart policy and its containers' states. */
export function podPhase(pod: V1Pod, view: PodView): PodPhase {
  const restartPolicy = pod.spec?.restartPolicy ?? 'Always';
  let pendingInit = 0;
  let failedInit = 0;
  for (const c of view.initContainers) {
    if (c.restartable) {
      if (c.state.kind !== 'running' || !c.started) pendingInit++;
      continue;
    }
    switch (c.state.kind) {
      case 'running':
        pendingInit++;
        break;
      case 'terminated':
        if (c.state.exitCode !== 0) failedInit++;
        break;
      case 'waiting':
        if (c.lastTermination) {
          if (c.lastTermination.exitCode !== 0) failedInit++;
        } else pendingInit++;
        break;
    }
  }
  let running = 0;
  let waiting = 0;
  let stopped = 0;
  let succeeded = 0;
  for (const c of view.containers) {
    switch (c.state.kind) {
      case 'running':
        running++;
        break;
      case 'terminated':
        stopped++;
        if (c.state.exitCode === 0) succeeded++;
        break;
      case 'waiting':
        if (c.lastTermination) stopped++;
        else waiting++;
        break;
    }
  }
  if (failedInit > 0 && restartPolicy === 'Never') return 'Failed';
  if (pendingInit > 0 || waiting > 0) return 'Pending';
  if (running > 0) return 'Running';
  if (stopped > 0) {
    if (view.terminal) return stopped === succeeded ? 'Succeeded' : 'Failed';
    if (restartPolicy === 'Always') return 'Running';
    if (stopped === succeeded) return 'Succeeded';
    if (restartPolicy === 'Never') return 'Failed';
    return 'Running';
  }
  return 'Pending';
}

/** A condition the kubelet owns; lastTransitionTime moves only when the status does. */
function condition(
  type: string,
  ok: boolean,
  previous: V1PodCondition[],
  now: string,
  reason?: string,
  message?: string,
): Record<string, unknown> {
  const status = ok ? 'True' : 'False';
  const before = previous.find((c) => c.type === type);
  const beforeTime = before?.lastTransitionTime as Date | string | undefined;
  const since =
    before && before.status === status && beforeTime
      ? typeof beforeTime === 'string'
        ? beforeTime
        : timestamp(beforeTime)
      : now;
  // lastProbeTime is null in the kubelet's conditions. A strategic merge patch merges conditions by
  // type, so reason and message are nulled explicitly when they no longer apply.
  return {
    type,
    status,
    lastProbeTime: null,
    lastTransitionTime: since,
    reason: !ok && reason ? reason : null,
    message: !ok && message ? message : null,
  };
}

function initPending(view: PodView): string[] {
  return view.initContainers
    .filter((c) =>
      c.restartable
        ? !(c.state.kind === 'running' && c.started)
        : !(c.state.kind === 'terminated' && c.state.exitCode === 0),
    )
    .map((c) => c.name);
}

function stateJson(state: ContainerState): Record<string, unknown> {
  switch (state.kind) {
    case 'waiting':
      return { waiting: { reason: state.reason, ...(state.message ? { message: state.message } : {}) } };
    case 'running':
      return { running: { startedAt: state.startedAt } };
    case 'terminated':
      return { terminated: terminatedJson(state) };
  }
}

function terminatedJson(t: TerminatedState): Record<string, unknown> {
  return {
    exitCode: t.exitCode,
    ...(t.signal ? { signal: t.signal } : {}),
    reason: t.reason,
    ...(t.message ? { message: t.message } : {}),
    startedAt: t.startedAt,
    finishedAt: t.finishedAt,
    containerID: t.containerId,
  };
}

function containerStatusJson(c: ContainerView): Record<string, unknown> {
  const containerId =
    c.state.kind === 'running' || c.state.kind === 'terminated'
      ? c.state.containerId
      : c.lastTermination?.containerId;
  return {
    name: c.name,
    state: stateJson(c.state),
    lastState: c.lastTermination ? { terminated: terminatedJson(c.lastTermination) } : {},
    ready: c.ready,
    restartCount: c.restartCount,
    image: c.image,
    imageID: c.imageId,
    ...(containerId ? { containerID: containerId } : {}),
    started: c.started,
  };
}

/**
 * The status to publish: the fields the kubelet owns. Conditions it does not own (PodScheduled,
 * readiness gates, disruption targets) are kept from the pod as they are.
 */
export function computePodStatus(pod: V1Pod, view: PodView, now: string): Record<string, unknown> {
  const previous = pod.status?.conditions ?? [];
  const previousPhase = pod.status?.phase;
  // Terminal phases are final.
  const phase: PodPhase =
    previousPhase === 'Succeeded' || previousPhase === 'Failed' ? previousPhase : podPhase(pod, view);
  const completed = phase === 'Succeeded' || phase === 'Failed';

  const pendingInit = initPending(view);
  const initialized = pendingInit.length === 0;
  const unready = view.containers.filter((c) => !c.ready).map((c) => c.name);
  const containersReady = unready.length === 0 && initialized && !completed;
  const gates = (pod.spec?.readinessGates ?? []).map((g) => g.conditionType);
  const failedGates = gates.filter((g) => previous.find((c) => c.type === g)?.status !== 'True');
  const ready = containersReady && failedGates.length === 0;

  const owned = new Set(['PodReadyToStartContainers', 'Initialized', 'ContainersReady', 'Ready']);
  const conditions: Record<string, unknown>[] = [
    condition('PodReadyToStartContainers', view.sandboxReady, previous, now),
    condition(
      'Initialized',
      initialized,
      previous,
      now,
      'ContainersNotInitialized',
      `containers with incomplete status: [${pendingInit.join(' ')}]`,
    ),
    condition(
      'ContainersReady',
      containersReady,
      previous,
      now,
      completed ? 'PodCompleted' : 'ContainersNotReady',
      completed ? undefined : `containers with unready status: [${unready.join(' ')}]`,
    ),
    condition(
      'Ready',
      ready,
      previous,
      now,
      completed
        ? 'PodCompleted'
        : unready.length || !initialized
          ? 'ContainersNotReady'
          : 'ReadinessGatesNotReady',
      completed
        ? undefined
        : unready.length || !initialized
          ? `containers with unready status: [${unready.join(' ')}]`
          : `corresponding condition of pod readiness gate "${failedGates.join('", "')}" does not exist.`,
    ),
  ];
  for (const c of previous) {
    if (!owned.has(c.type)) conditions.push(c as unknown as Record<string, unknown>);
  }

  const status: Record<string, unknown> = {
    phase,
    conditions,
    hostIP: view.hostIP,
    hostIPs: [{ ip: view.hostIP }],
    initContainerStatuses: view.initContainers.map(containerStatusJson),
    containerStatuses: view.containers.map(containerStatusJson),
  };
  if (view.podIP) {
    status.podIP = view.podIP;
    status.podIPs = [{ ip: view.podIP }];
  }
  if (view.startTime) status.startTime = view.startTime;
  if (pod.metadata?.generation !== undefined) status.observedGeneration = pod.metadata.generation;
  return status;
}
