// Agent injection as a pure function: from a pod that is being created (and the workload that owns it)
// to the JSON Patch the mutating webhook returns. The webhook server, the owner lookup and the API
// calls live elsewhere; everything here is data in, data out, and checked against golden files.
//
// What injection adds, and why:
// - the `tp-init` init container (NET_ADMIN, NET_RAW: iptables-restore needs both) that redirects the
//   app's ports to the agent inside the pod's network namespace, so the container ports and the
//   Service's targetPort stay exactly as the user wrote them;
// - the `tp-agent` sidecar, running as its own UID (the capture rules exempt that UID so the agent's
//   own dials to the app are never captured again), configured through the downward API, with a projected
//   ServiceAccount token bound to the pod and addressed to the manager (how it proves which pod it is);
// - the app's kubelet probes on captured ports, rewritten to the agent's probe port (probe-rewrite.ts),
//   so a probe is never forwarded to a workstation, whatever address the kubelet probes from;
// - annotations on the pod saying what was done (or why nothing was), for `tp describe` and for the
//   manager to report a clear error instead of a silent missing agent.
import * as path from 'node:path';
import type { V1Container, V1EnvFromSource, V1EnvVar, V1Pod, V1VolumeMount } from '@kubernetes/client-node';
import { type AgentContainer, appEnvPrefix, ENV, encode } from '../../agentconfig/env.js';
import {
  AGENT_CONTAINER,
  AGENT_LABEL,
  AGENT_LABEL_VALUE,
  AGENT_MECHANISM_ANNOTATION,
  AGENT_MOUNTS_DIR,
  AGENT_TOKEN_DIR,
  AGENT_TOKEN_FILE,
  AGENT_TOKEN_VOLUME,
  CAPTURE_PORTS_ANNOTATION,
  INIT_CONTAINER,
  INJECT_ANNOTATION,
  INJECT_ENABLED,
  INJECTED_ANNOTATION,
  injectionRequested,
  isMechanism,
  MECHANISM_ANNOTATION,
  type Mechanism,
  NOT_INJECTED_ANNOTATION,
  PORTS_ANNOTATION,
  PROBES_NOT_REWRITTEN_ANNOTATION,
  PROBES_REWRITTEN_ANNOTATION,
} from '../../kube/annotations.js';
import { formatPortMappings, type PortMapping } from '../../netaddr/parse.js';
import { AGENT_PROBE_PATH, type AppProbe } from '../../probes/spec.js';
import { resolvePort, rewriteProbes } from './probe-rewrite.js';

/** What the manager's chart values say about the agent and the init container. */
export interface InjectionConfig {
  /** The tp version doing the injection (recorded on the pod). */
  version: string;
  agentImage: string;
  initImage: string;
  imagePullPolicy: string;
  /** The UID the agent runs as; the capture rules never capture its traffic. */
  agentUid: number;
  /** The first port the agent may listen on; moved up past any port a container of the pod uses. */
  agentPort: number;
  /**
   * The first port of the agent's probe server (the kubelet's rewritten probes); moved up past the
   * ports the pod uses or probes, the captured ports and the agent port.
   */
  probePort: number;
  /**
   * The first port of the agent's own service on 127.0.0.1 in the pod (direct intercepted connections,
   * reached through a port-forward); moved up past the same ports and the probe port.
   */
  directPort: number;
  /** HOST:PORT where agents reach the traffic manager (its Service). */
  managerAddress: string;
  /** The audience of the agent's projected ServiceAccount token: the manager accepts no other. */
  tokenAudience: string;
  /** Its lifetime (at least 600 s); the kubelet renews it at 80 %. */
  tokenExpirationSeconds: number;
  logLevel: string;
  defaultMechanism: Mechanism;
  agentResources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  /** The agent's TP_WORKSTATION_DIAL_DEADLINE (chart timeouts.workstationDial); undefined: its default. */
  workstationDialDeadlineMs?: number;
}

/** The Deployment, ReplicaSet or StatefulSet that owns a pod (found by the caller through ownerReferences). */
export interface OwnerWorkload {
  kind: 'Deployment' | 'ReplicaSet' | 'StatefulSet';
  name: string;
}

export interface JsonPatchOperation {
  op: 'add' | 'replace' | 'remove';
  path: string;
  value?: unknown;
}

/** One app container (its captured ports, possibly none), as the agent learns it (agentconfig/). */
export type CapturedContainer = AgentContainer;

export type InjectionPlan =
  /** Nothing to do and nothing to say: injection not requested, or already done. */
  | { action: 'skip'; reason: string }
  /** Injection was requested but cannot be done: the pod starts unchanged, annotated with the reason. */
  | { action: 'refuse'; reason: string; patch: JsonPatchOperation[] }
  | {
      action: 'inject';
      mechanism: Mechanism;
      ports: PortMapping[];
      containers: CapturedContainer[];
      probePort: number;
      /** The kubelet probes rewritten to the probe port: what the agent performs instead (TP_PROBES). */
      probes: AppProbe[];
      patch: JsonPatchOperation[];
    };

/** RFC 6901: "~" and "/" inside a JSON Pointer segment. */
export function escapeJsonPointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

/**
 * The ports the agent captures: every TCP port the pod's containers declare, plus the ports listed in
 * the capture-ports annotation (numeric Service targetPorts no container declares). Each app port
 * once, in declaration order; the first container declaring a port owns it.
 */
export function capturedPorts(pod: V1Pod): { container: string; name: string; port: number }[] {
  const out: { container: string; name: string; port: number }[] = [];
  const seen = new Set<number>();
  const containers = (pod.spec?.containers ?? []).filter((c) => c.name !== AGENT_CONTAINER);
  for (const c of containers) {
    for (const p of c.ports ?? []) {
      if ((p.protocol ?? 'TCP') !== 'TCP' || seen.has(p.containerPort)) continue;
      seen.add(p.containerPort);
      out.push({ container: c.name, name: p.name ?? '', port: p.containerPort });
    }
  }
  const extra = pod.metadata?.annotations?.[CAPTURE_PORTS_ANNOTATION] ?? '';
  const first = containers[0]?.name ?? '';
  for (const part of extra.split(',')) {
    const s = part.trim();
    if (!/^\d+$/.test(s)) continue;
    const port = Number(s);
    if (port < 1 || port > 65535 || seen.has(port)) continue;
    seen.add(port);
    out.push({ container: first, name: '', port });
  }
  return out;
}

/**
 * A port for the agent to listen on: the configured one, or the next one up that no container of the
 * pod declares and that is not `taken`.
 */
export function choosePodPort(pod: V1Pod, configured: number, taken: number[]): number {
  const used = new Set<number>(taken);
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    for (const p of c.ports ?? []) used.add(p.containerPort);
  }
  let port = configured;
  while (used.has(port)) port++;
  return port;
}

/** The numeric ports the pod's probes name (an app may listen on a port it does not declare). */
function probedPorts(pod: V1Pod): number[] {
  const out: number[] = [];
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
      const port = probe?.httpGet?.port ?? probe?.tcpSocket?.port ?? probe?.grpc?.port;
      const n = port === undefined ? undefined : resolvePort(port, c);
      if (typeof n === 'number') out.push(n);
    }
  }
  return out;
}

/**
 * Renames a container's env for the agent: NAME becomes PREFIX+NAME, and `$(NAME)` references to
 * variables defined earlier in the same list follow the rename (Kubernetes expands them in order;
 * `$$(X)` is the escape for a literal `$(X)` and stays as it is).
 */
export function prefixEnv(env: V1EnvVar[], prefix: string, containerName: string): V1EnvVar[] {
  const defined = new Set<string>();
  return env.map((e) => {
    const out: V1EnvVar = { name: `${prefix}${e.name}` };
    if (e.value !== undefined) {
      out.value = e.value.replace(/\$\$|\$\(([^)]*)\)/g, (m, ref: string | undefined) =>
        ref !== undefined && defined.has(ref) ? `$(${prefix}${ref})` : m,
      );
    }
    if (e.valueFrom) {
      out.valueFrom = e.valueFrom;
      // A resourceFieldRef without containerName means "this container": in the agent that would read
      // the agent's own limits, so name the app container.
      if (e.valueFrom.resourceFieldRef && !e.valueFrom.resourceFieldRef.containerName) {
        out.valueFrom = {
          ...e.valueFrom,
          resourceFieldRef: { ...e.valueFrom.resourceFieldRef, containerName },
        };
      }
    }
    defined.add(e.name);
    return out;
  });
}

function prefixEnvFrom(envFrom: V1EnvFromSource[], prefix: string): V1EnvFromSource[] {
  return envFrom.map((e) => ({ ...e, prefix: `${prefix}${e.prefix ?? ''}` }));
}

function annotationPatch(pod: V1Pod, values: Record<string, string>): JsonPatchOperation[] {
  if (!pod.metadata?.annotations) return [{ op: 'add', path: '/metadata/annotations', value: values }];
  return Object.entries(values).map(([k, v]) => ({
    op: 'add' as const,
    path: `/metadata/annotations/${escapeJsonPointer(k)}`,
    value: v,
  }));
}

function refuse(pod: V1Pod, reason: string): InjectionPlan {
  return { action: 'refuse', reason, patch: annotationPatch(pod, { [NOT_INJECTED_ANNOTATION]: reason }) };
}

function initContainer(
  config: InjectionConfig,
  mechanism: Mechanism,
  ports: number[],
  agentPort: number,
): V1Container {
  const args = ['apply', '--ports', ports.join(','), '--agent-port', String(agentPort)];
  args.push('--agent-uid', String(config.agentUid));
  if (mechanism !== 'iptables') args.push('--mechanism', mechanism);
  return {
    name: INIT_CONTAINER,
    image: config.initImage,
    imagePullPolicy: config.imagePullPolicy,
    command: ['tp-init'],
    args,
    env: [{ name: ENV.logLevel, value: config.logLevel }],
    securityContext: {
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      // eBPF: load (BPF, and PERFMON for the verifier to accept the socket lookups) and attach the program
      // (NET_ADMIN), give the agent's UID its two maps (CHOWN); NET_ADMIN + NET_RAW also serve the iptables
      // fallback. Exactly what bpf/capture-config.ts missingCapabilities() checks.
      capabilities: {
        add:
          mechanism === 'ebpf'
            ? ['NET_ADMIN', 'NET_RAW', 'BPF', 'PERFMON', 'CHOWN']
            : ['NET_ADMIN', 'NET_RAW'],
        drop: ['ALL'],
      },
    },
    ...(mechanism === 'ebpf' ? { volumeMounts: [bpffsMount()] } : {}),
  };
}

/**
 * eBPF: tp-init pins the program and maps in bpffs and the agent opens them, so both mount the node's
 * bpffs; one mounted inside a container would die with it, and the pins with it (docs/ebpf.md).
 */
const BPFFS_VOLUME = 'tp-bpffs';
const bpffsMount = () => ({ name: BPFFS_VOLUME, mountPath: '/sys/fs/bpf' });

interface AgentPlan {
  mechanism: Mechanism;
  ports: PortMapping[];
  containers: CapturedContainer[];
  probePort: number;
  directPort: number;
  probes: AppProbe[];
}

function agentContainer(
  config: InjectionConfig,
  pod: V1Pod,
  owner: OwnerWorkload,
  { mechanism, ports, containers, probePort, directPort, probes }: AgentPlan,
): V1Container {
  const env: V1EnvVar[] = encode({
    workloadName: owner.name,
    workloadKind: owner.kind,
    managerAddress: config.managerAddress,
    ports,
    mechanism,
    containers,
    probePort,
    directPort,
    probes,
    managerTokenFile: AGENT_TOKEN_FILE,
    logLevel: config.logLevel,
    workstationDialDeadlineMs: config.workstationDialDeadlineMs,
  });
  const envFrom: V1EnvFromSource[] = [];
  for (const captured of containers) {
    const app = pod.spec?.containers.find((c) => c.name === captured.name);
    if (!app) continue;
    env.push(...prefixEnv(app.env ?? [], captured.envPrefix, app.name));
    envFrom.push(...prefixEnvFrom(app.envFrom ?? [], captured.envPrefix));
  }
  const container: V1Container = {
    name: AGENT_CONTAINER,
    image: config.agentImage,
    imagePullPolicy: config.imagePullPolicy,
    // PID 1 holds the listening sockets and restarts the agent at once if it dies (agent/holder.ts).
    command: ['tp-agent-holder'],
    env,
    // Not ready until its listeners are up: with iptables capture the app ports refuse connections until
    // then, and the app's rewritten probes are answered by the agent.
    readinessProbe: {
      httpGet: { path: AGENT_PROBE_PATH, port: probePort, scheme: 'HTTP' },
      periodSeconds: 2,
      timeoutSeconds: 1,
      failureThreshold: 3,
    },
    securityContext: {
      runAsUser: config.agentUid,
      runAsGroup: config.agentUid,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    },
  };
  if (envFrom.length > 0) container.envFrom = envFrom;
  if (config.agentResources) container.resources = config.agentResources;
  container.volumeMounts = [
    { name: AGENT_TOKEN_VOLUME, mountPath: AGENT_TOKEN_DIR, readOnly: true },
    ...(mechanism === 'ebpf' ? [bpffsMount()] : []),
    ...appVolumeMounts(pod, containers),
  ];
  return container;
}

/** Volumes Kubernetes always mounts read-only (the kubelet writes them; a container never may). */
const API_DATA_VOLUMES = ['configMap', 'secret', 'projected', 'downwardAPI'] as const;

/**
 * Each app container's volume mounts, for remote mounts: the same volume (and subPath) under
 * AGENT_MOUNTS_DIR/<container>/<mountPath>, read-only where the app has it read-only and for the API
 * data volumes (ConfigMap, Secret, projected, downward API), else read-write as the app has it (an
 * emptyDir, a claim): the agent writes there only for a mount asked `:rw` (docs/mounts.md). Without
 * mountPropagation (Bidirectional needs a privileged container). The service-account token the API
 * server added to the app container is among them.
 */
export function appVolumeMounts(pod: V1Pod, containers: CapturedContainer[]): V1VolumeMount[] {
  const volumes = new Map((pod.spec?.volumes ?? []).map((v) => [v.name, v]));
  const out: V1VolumeMount[] = [];
  for (const captured of containers) {
    const app = pod.spec?.containers.find((c) => c.name === captured.name);
    for (const m of app?.volumeMounts ?? []) {
      const mount: V1VolumeMount = {
        name: m.name,
        mountPath: path.posix
          .join(AGENT_MOUNTS_DIR, captured.name, path.posix.normalize(`/${m.mountPath}`))
          .replace(/(.)\/+$/, '$1'),
        readOnly: m.readOnly === true || API_DATA_VOLUMES.some((kind) => volumes.get(m.name)?.[kind]),
      };
      if (m.subPath) mount.subPath = m.subPath;
      if (m.subPathExpr) mount.subPathExpr = m.subPathExpr;
      out.push(mount);
    }
  }
  return out;
}

/**
 * Decides what the webhook does with a pod being created. `owner` is the workload found through the
 * pod's ownerReferences (undefined when it has none we support). Never fails: a pod that cannot be
 * injected starts as it is, annotated with the reason.
 */
export function planInjection(
  pod: V1Pod,
  owner: OwnerWorkload | undefined,
  config: InjectionConfig,
): InjectionPlan {
  const annotations = pod.metadata?.annotations;
  if (!injectionRequested(annotations))
    return { action: 'skip', reason: `${INJECT_ANNOTATION} is not "${INJECT_ENABLED}"` };
  const spec = pod.spec;
  if (!spec) return { action: 'skip', reason: 'the pod has no spec' };
  if (spec.containers.some((c) => c.name === AGENT_CONTAINER))
    return { action: 'skip', reason: 'the agent is already injected' };

  if (!owner) {
    return refuse(
      pod,
      'agent not injected: the pod has no owning Deployment, ReplicaSet or StatefulSet; tp intercepts workloads, not bare pods',
    );
  }
  if (spec.hostNetwork) {
    return refuse(
      pod,
      "agent not injected: the pod uses hostNetwork, so capture rules would change the node's network",
    );
  }
  // tp's own choice for this agent first, then the owner's preference, then the chart default.
  const source = [AGENT_MECHANISM_ANNOTATION, MECHANISM_ANNOTATION].find(
    (a) => annotations?.[a] !== undefined,
  );
  const requested = source ? annotations![source]! : config.defaultMechanism;
  if (!isMechanism(requested)) {
    return refuse(
      pod,
      `agent not injected: unknown mechanism "${requested}" in ${source ?? 'the chart default'}; use iptables or ebpf`,
    );
  }
  const mechanism = requested;
  const captured = capturedPorts(pod);
  if (captured.length === 0) {
    return refuse(
      pod,
      `agent not injected: no container of ${owner.kind} ${owner.name} declares a TCP port; declare the port in the container's ports or in ${CAPTURE_PORTS_ANNOTATION}`,
    );
  }
  const capturedNumbers = captured.map((c) => c.port);
  const agentPort = choosePodPort(pod, config.agentPort, capturedNumbers);
  const probePort = choosePodPort(pod, config.probePort, [
    ...capturedNumbers,
    agentPort,
    ...probedPorts(pod),
  ]);
  // Loopback only, so never declared; still moved past every port the pod declares or probes, in case
  // a container listens on it.
  const directPort = choosePodPort(pod, config.directPort, [
    ...capturedNumbers,
    agentPort,
    probePort,
    ...probedPorts(pod),
  ]);
  const probes = rewriteProbes(pod, capturedNumbers, probePort);
  // One agent listener serves every captured port: the agent reads the original port from the socket.
  const ports: PortMapping[] = captured.map((c) => ({ appPort: c.port, agentPort }));

  // Every app container, in the pod's order, also those whose ports are not captured: an ingest (-c)
  // hands out any container's environment, and an intercept the one of the container owning the port.
  const containers: CapturedContainer[] = spec.containers
    .filter((c) => c.name !== AGENT_CONTAINER)
    .map((c, i) => ({
      name: c.name,
      envPrefix: appEnvPrefix(i),
      ports: captured
        .filter((p) => p.container === c.name)
        .map((p) => ({ name: p.name, appPort: p.port, agentPort, protocol: 'TCP' as const })),
    }));

  const recorded: Record<string, string> = {
    [INJECTED_ANNOTATION]: config.version,
    [PORTS_ANNOTATION]: formatPortMappings(ports),
    [MECHANISM_ANNOTATION]: mechanism,
  };
  if (probes.rewritten.length > 0) recorded[PROBES_REWRITTEN_ANNOTATION] = probes.rewritten.join(',');
  if (probes.notRewritten.length > 0)
    recorded[PROBES_NOT_REWRITTEN_ANNOTATION] = probes.notRewritten.join('; ');
  const patch: JsonPatchOperation[] = annotationPatch(pod, recorded);
  // Before tp-init is inserted: the probe patches address the init containers by their current index.
  patch.push(...probes.patch);
  const init = initContainer(config, mechanism, capturedNumbers, agentPort);
  // First, so the rules are in place before any other init container or app container starts.
  if (spec.initContainers && spec.initContainers.length > 0)
    patch.push({ op: 'add', path: '/spec/initContainers/0', value: init });
  else patch.push({ op: 'add', path: '/spec/initContainers', value: [init] });
  patch.push({
    op: 'add',
    path: '/spec/containers/-',
    value: agentContainer(config, pod, owner, {
      mechanism,
      ports,
      containers,
      probePort,
      directPort,
      probes: probes.probes,
    }),
  });
  // The token the agent arrives with: bound to this pod (the manager reads the pod from it) and only good
  // for the manager (its audience); it works whatever automountServiceAccountToken says.
  const volumes: object[] = [
    {
      name: AGENT_TOKEN_VOLUME,
      projected: {
        sources: [
          {
            serviceAccountToken: {
              audience: config.tokenAudience,
              expirationSeconds: config.tokenExpirationSeconds,
              path: 'token',
            },
          },
        ],
      },
    },
  ];
  if (mechanism === 'ebpf')
    volumes.push({ name: BPFFS_VOLUME, hostPath: { path: '/sys/fs/bpf', type: 'Directory' } });
  if (spec.volumes && spec.volumes.length > 0)
    for (const volume of volumes) patch.push({ op: 'add', path: '/spec/volumes/-', value: volume });
  else patch.push({ op: 'add', path: '/spec/volumes', value: volumes });
  if (pod.metadata?.labels)
    patch.push({
      op: 'add',
      path: `/metadata/labels/${escapeJsonPointer(AGENT_LABEL)}`,
      value: AGENT_LABEL_VALUE,
    });
  else patch.push({ op: 'add', path: '/metadata/labels', value: { [AGENT_LABEL]: AGENT_LABEL_VALUE } });
  return { action: 'inject', mechanism, ports, containers, probePort, probes: probes.probes, patch };
}

/**
 * Applies a JSON Patch made of the operations planInjection emits (add to objects and arrays,
 * replace, remove) to a copy of a document. Used by the tests and by `tp describe --dry-run`-style
 * previews; the API server applies the real patch.
 */
export function applyJsonPatch<T>(doc: T, patch: JsonPatchOperation[]): T {
  const root = structuredClone(doc) as unknown;
  for (const op of patch) {
    const segments = op.path
      .split('/')
      .slice(1)
      .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
    const last = segments.pop();
    if (last === undefined) throw new Error(`JSON Patch path "${op.path}" names the whole document`);
    let parent = root as Record<string, unknown> | unknown[];
    for (const s of segments) {
      const next = Array.isArray(parent) ? parent[Number(s)] : parent[s];
      if (next === null || typeof next !== 'object')
        throw new Error(`JSON Patch path "${op.path}": "${s}" does not exist`);
      parent = next as Record<string, unknown> | unknown[];
    }
    if (Array.isArray(parent)) {
      const index = last === '-' ? parent.length : Number(last);
      if (op.op === 'add') parent.splice(index, 0, op.value);
      else if (op.op === 'replace') parent[index] = op.value;
      else parent.splice(index, 1);
    } else if (op.op === 'remove') delete parent[last];
    else parent[last] = op.value;
  }
  return root as T;
}
