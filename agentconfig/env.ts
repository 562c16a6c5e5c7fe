// The contract between the injector (manager/kubernetes/injection.ts), which writes the agent sidecar's
// environment, and the agent (agent/), which reads it: every variable's name, `encode` for the injector
// and `decode` for the agent. Pure; bundled into the agent, so it imports neither the Kubernetes client
// nor anything of the manager. A variable added on one side only cannot be missed: both use these names.
import * as net from 'node:net';
import { type Level, parseLevel } from '../logging/logger.js';
import {
  formatPortMappings,
  type HostPort,
  type PortMapping,
  parseDuration,
  parseHostPort,
  parsePort,
  parsePortMappings,
  UsageError,
} from '../netaddr/parse.js';
import { type AppProbe, decodeProbes, encodeProbes } from '../probes/spec.js';

/** The agent's environment variables. */
export const ENV = {
  /** HOST:PORT of the traffic manager (required). */
  managerAddress: 'TP_MANAGER_ADDRESS',
  workloadName: 'TP_WORKLOAD_NAME',
  /** Deployment, ReplicaSet, StatefulSet; default Standalone. */
  workloadKind: 'TP_WORKLOAD_KIND',
  /** The pod's namespace, pod name and IP: the downward API in a pod. */
  namespace: 'TP_NAMESPACE',
  podName: 'TP_POD_NAME',
  podIp: 'TP_POD_IP',
  /** appPort:agentPort[,…]. */
  ports: 'TP_PORTS',
  /** The probe server's port (the kubelet's rewritten probes); unset: none. */
  probePort: 'TP_PROBE_PORT',
  /**
   * The port of the agent's own service on 127.0.0.1 (rpc/manager.proto Agent: intercepted connections
   * straight to the owning client, through a port-forward); unset: none.
   */
  directPort: 'TP_DIRECT_PORT',
  /** The app's original kubelet probes, JSON (probes/spec.ts). */
  probes: 'TP_PROBES',
  /** iptables, ebpf or none (default). */
  mechanism: 'TP_MECHANISM',
  /** The pod's app containers, JSON `[{name, envPrefix, ports}]`; unset: standalone. */
  containers: 'TP_CONTAINERS',
  /** The projected ServiceAccount token the agent arrives with. */
  managerTokenFile: 'TP_MANAGER_TOKEN_FILE',
  /** Every tp process reads it (logging/); the injector passes the chart's level on. */
  logLevel: 'TP_LOG_LEVEL',
  /** A duration (`2s`, `500ms`): how long an intercepted connection waits for the workstation. */
  workstationDialDeadline: 'TP_WORKSTATION_DIAL_DEADLINE',
  // Not written by the injector: standalone runs, tests and benches set them.
  /** Listen on this address only (default: every address, dual-stack). */
  listenAddress: 'TP_LISTEN_ADDRESS',
  /** Standalone (no TP_CONTAINERS): a KEY=VALUE file with the app's environment. */
  appEnvFile: 'TP_APP_ENV_FILE',
  /** eBPF capture: the bpffs directory tp-init pinned under (default /sys/fs/bpf/tp). */
  bpfPinRoot: 'TP_BPF_PIN_ROOT',
  /** Remote mounts: the directory holding each app container's volumes (default /tp/mounts). */
  mountsDir: 'TP_MOUNTS_DIR',
  /** Where connections that pass through are carried: `thread` (default) or `main` (the benches compare). */
  passthrough: 'TP_PASSTHROUGH',
} as const;

/**
 * Each app container's environment reaches the agent under `TP_APPENV_<n>_` (n: the container's index in
 * the pod); the agent strips it. A prefix keeps the agent's own process environment free of the app's.
 */
export const APP_ENV_PREFIX = 'TP_APPENV_';

/** The prefix of the n-th app container's environment. */
export function appEnvPrefix(index: number): string {
  return `${APP_ENV_PREFIX}${index}_`;
}

export type Mechanism = 'iptables' | 'ebpf' | 'none';
const MECHANISMS: readonly Mechanism[] = ['iptables', 'ebpf', 'none'];

/** Where the agent carries the connections it passes through (agent/passthrough-thread.ts). */
export type Passthrough = 'thread' | 'main';
const PASSTHROUGHS: readonly Passthrough[] = ['thread', 'main'];

/** One app container (its captured ports, possibly none), as TP_CONTAINERS carries it. */
export interface AgentContainer {
  name: string;
  /** The prefix under which the agent finds this container's environment (appEnvPrefix). */
  envPrefix: string;
  ports: { name: string; appPort: number; agentPort: number; protocol: 'TCP' }[];
}

/** What the injector knows about the agent it adds; the pod's name, IP and namespace come from the pod. */
export interface InjectedAgent {
  workloadName: string;
  workloadKind: string;
  managerAddress: string;
  ports: PortMapping[];
  mechanism: Exclude<Mechanism, 'none'>;
  containers: AgentContainer[];
  probePort: number;
  directPort: number;
  probes: AppProbe[];
  managerTokenFile: string;
  logLevel: string;
  /** Undefined: the agent's default. */
  workstationDialDeadlineMs: number | undefined;
}

/** A container's env entry, as Kubernetes' EnvVar: a value, or a field of the pod (downward API). */
export type EnvEntry =
  | { name: string; value: string }
  | { name: string; valueFrom: { fieldRef: { apiVersion: 'v1'; fieldPath: string } } };

const fromPod = (name: string, fieldPath: string): EnvEntry => ({
  name,
  valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } },
});

/** The agent sidecar's env entries (the app containers' own, prefixed, follow them; the injector adds those). */
export function encode(agent: InjectedAgent): EnvEntry[] {
  const env: EnvEntry[] = [
    fromPod(ENV.podName, 'metadata.name'),
    fromPod(ENV.podIp, 'status.podIP'),
    fromPod(ENV.namespace, 'metadata.namespace'),
    { name: ENV.workloadName, value: agent.workloadName },
    { name: ENV.workloadKind, value: agent.workloadKind },
    { name: ENV.managerAddress, value: agent.managerAddress },
    { name: ENV.ports, value: formatPortMappings(agent.ports) },
    { name: ENV.mechanism, value: agent.mechanism },
    { name: ENV.containers, value: JSON.stringify(agent.containers) },
    { name: ENV.probePort, value: String(agent.probePort) },
    { name: ENV.directPort, value: String(agent.directPort) },
    { name: ENV.managerTokenFile, value: agent.managerTokenFile },
  ];
  if (agent.probes.length > 0) env.push({ name: ENV.probes, value: encodeProbes(agent.probes) });
  env.push({ name: ENV.logLevel, value: agent.logLevel });
  if (agent.workstationDialDeadlineMs !== undefined)
    env.push({ name: ENV.workstationDialDeadline, value: `${agent.workstationDialDeadlineMs}ms` });
  return env;
}

export interface AgentConfig {
  managerAddress: HostPort;
  workloadName: string;
  workloadKind: string;
  namespace: string;
  podName: string;
  podIp: string;
  ports: PortMapping[];
  /** Where the probe server listens (the kubelet's rewritten probes); undefined: no probe server. */
  probePort: number | undefined;
  /** Where the agent's own service listens on 127.0.0.1 (direct intercepted connections); undefined: none. */
  directPort: number | undefined;
  /** The app's original probes, performed for the kubelet on the probe port. */
  probes: AppProbe[];
  mechanism: Mechanism;
  /** The pod's app containers (TP_CONTAINERS); undefined: standalone, no injector. */
  containers: AgentContainer[] | undefined;
  /** Where the agent listens; empty: every address (dual-stack when IPv6 is there). */
  listenAddress: string;
  /** A KEY=VALUE file with the app container's environment, sent to intercepting clients. */
  appEnvFile: string | undefined;
  logLevel: Level;
  /** eBPF capture: the bpffs directory tp-init pinned under (undefined: its default, /sys/fs/bpf/tp). */
  bpfPinRoot: string | undefined;
  /** Remote mounts: the directory holding each app container's volumes (undefined: /tp/mounts). */
  mountsDir: string | undefined;
  /** The projected ServiceAccount token the agent arrives with (undefined: none, standalone). */
  managerTokenFile: string | undefined;
  /** `thread`: the passthrough thread (default); `main`: net.Sockets on the main thread. */
  passthrough: Passthrough;
  /**
   * An intercepted connection whose tunnel to the workstation is not open within this long goes to the
   * app instead (TP_WORKSTATION_DIAL_DEADLINE; chart value timeouts.workstationDial).
   */
  workstationDialDeadlineMs: number;
}

/** See AgentConfig.workstationDialDeadlineMs: far above a healthy port-forward's dial (docs/faults.md). */
export const DEFAULT_WORKSTATION_DIAL_DEADLINE_MS = 2_000;

/** The agent's configuration from its environment; a bad value throws a UsageError naming the variable. */
export function decode(env: Record<string, string | undefined>): AgentConfig {
  const get = (name: string): string | undefined => env[name]?.trim() || undefined;
  const required = (name: string, example: string): string => {
    const v = get(name);
    if (!v) throw new UsageError(`${name} is not set: the agent needs it, e.g. ${name}=${example}`);
    return v;
  };
  const ip = (name: string, v: string): string => {
    if (!net.isIP(v)) throw new UsageError(`${name}="${v}" is not an IP address`);
    return v;
  };
  const mechanism = (get(ENV.mechanism) ?? 'none') as Mechanism;
  if (!MECHANISMS.includes(mechanism))
    throw new UsageError(
      `${ENV.mechanism}="${env[ENV.mechanism]}" is not known: use ${MECHANISMS.join(', ')}`,
    );
  const passthrough = (get(ENV.passthrough) ?? 'thread') as Passthrough;
  if (!PASSTHROUGHS.includes(passthrough))
    throw new UsageError(
      `${ENV.passthrough}="${env[ENV.passthrough]}" is not known: use ${PASSTHROUGHS.join(' or ')}`,
    );
  const podIp = ip(ENV.podIp, required(ENV.podIp, '10.244.0.7'));
  let logLevel: Level;
  try {
    logLevel = parseLevel(env[ENV.logLevel]);
  } catch (e) {
    throw new UsageError(`${ENV.logLevel}: ${(e as Error).message}`);
  }
  const ports = parsePortMappings(required(ENV.ports, '8080:15001'), ENV.ports);
  const probePortText = get(ENV.probePort);
  const probePort = probePortText ? parsePort(probePortText, ENV.probePort) : undefined;
  const probes = decodeProbes(env[ENV.probes], ENV.probes);
  if (probes.length > 0 && probePort === undefined)
    throw new UsageError(
      `${ENV.probes} is set but ${ENV.probePort} is not: the kubelet reaches the probes there`,
    );
  if (probePort !== undefined && ports.some((p) => p.agentPort === probePort || p.appPort === probePort))
    throw new UsageError(
      `${ENV.probePort}=${probePort} is also in ${ENV.ports}: the probe port must be one capture leaves alone`,
    );
  const directPortText = get(ENV.directPort);
  const directPort = directPortText ? parsePort(directPortText, ENV.directPort) : undefined;
  if (
    directPort !== undefined &&
    (directPort === probePort || ports.some((p) => p.agentPort === directPort || p.appPort === directPort))
  )
    throw new UsageError(
      `${ENV.directPort}=${directPort} is also in ${ENV.ports} or ${ENV.probePort}: the agent's direct port must be a port of its own`,
    );
  const listenAddress = get(ENV.listenAddress);
  const deadline = get(ENV.workstationDialDeadline);
  return {
    managerAddress: parseHostPort(
      required(ENV.managerAddress, 'traffic-manager.tp:8081'),
      ENV.managerAddress,
    ),
    workloadName: required(ENV.workloadName, 'echo'),
    workloadKind: get(ENV.workloadKind) ?? 'Standalone',
    namespace: get(ENV.namespace) ?? 'default',
    podName: required(ENV.podName, 'echo-0'),
    podIp,
    ports,
    probePort,
    directPort,
    probes,
    mechanism,
    containers: decodeContainers(get(ENV.containers)),
    listenAddress: listenAddress ? ip(ENV.listenAddress, listenAddress) : '',
    appEnvFile: get(ENV.appEnvFile),
    logLevel,
    bpfPinRoot: get(ENV.bpfPinRoot),
    mountsDir: get(ENV.mountsDir),
    managerTokenFile: get(ENV.managerTokenFile),
    passthrough,
    workstationDialDeadlineMs: deadline
      ? parseDuration(deadline, ENV.workstationDialDeadline)
      : DEFAULT_WORKSTATION_DIAL_DEADLINE_MS,
  };
}

/** TP_CONTAINERS; undefined when unset (standalone). */
function decodeContainers(text: string | undefined): AgentContainer[] | undefined {
  if (text === undefined) return undefined;
  try {
    const list: unknown = JSON.parse(text);
    if (!Array.isArray(list)) throw new Error('not a JSON array');
    for (const c of list as Partial<AgentContainer>[]) {
      if (typeof c?.name !== 'string' || typeof c.envPrefix !== 'string' || !Array.isArray(c.ports))
        throw new Error('each entry needs name, envPrefix and ports');
      if (!c.envPrefix.startsWith(APP_ENV_PREFIX))
        throw new Error(`${c.name}: its envPrefix "${c.envPrefix}" does not start with ${APP_ENV_PREFIX}`);
      for (const p of c.ports)
        if (!Number.isInteger(p?.appPort)) throw new Error(`${c.name}: each port needs a numeric appPort`);
    }
    return list as AgentContainer[];
  } catch (e) {
    throw new UsageError(
      `${ENV.containers} is not valid (${(e as Error).message}): it is written by tp's injector; re-inject the agent`,
    );
  }
}

/** A container's environment: the variables under its prefix, the prefix stripped. */
export function containerEnvironment(
  env: Record<string, string | undefined>,
  container: Pick<AgentContainer, 'envPrefix'>,
): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env)
      .filter(([k]) => k.startsWith(container.envPrefix))
      .map(([k, v]) => [k.slice(container.envPrefix.length), v ?? '']),
  );
}
