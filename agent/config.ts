// The agent's configuration, all from the environment (it runs as a sidecar; the injector sets these).
import * as net from 'node:net';
import { type Level, parseLevel } from '../logging/logger.js';
import {
  type HostPort,
  type PortMapping,
  parseDuration,
  parseHostPort,
  parsePort,
  parsePortMappings,
  UsageError,
} from '../netaddr/parse.js';
import { type AppProbe, decodeProbes } from '../probes/spec.js';

export type Mechanism = 'iptables' | 'ebpf' | 'none';

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
  /** The app's original probes, performed for the kubelet on the probe port. */
  probes: AppProbe[];
  mechanism: Mechanism;
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
  /**
   * An intercepted connection whose tunnel to the workstation is not open within this long goes to the
   * app instead (TP_WORKSTATION_DIAL_DEADLINE; chart value agent.workstationDialDeadline).
   */
  workstationDialDeadlineMs: number;
}

/** See AgentConfig.workstationDialDeadlineMs: far above a healthy port-forward's dial (docs/faults.md). */
export const DEFAULT_WORKSTATION_DIAL_DEADLINE_MS = 2_000;

const mechanisms: Mechanism[] = ['iptables', 'ebpf', 'none'];

export function agentConfigFromEnv(env: NodeJS.ProcessEnv): AgentConfig {
  const required = (name: string, example: string): string => {
    const v = env[name]?.trim();
    if (!v) throw new UsageError(`${name} is not set: the agent needs it, e.g. ${name}=${example}`);
    return v;
  };
  const mechanism = (env.TP_MECHANISM?.trim() || 'none') as Mechanism;
  if (!mechanisms.includes(mechanism))
    throw new UsageError(`TP_MECHANISM="${env.TP_MECHANISM}" is not known: use ${mechanisms.join(', ')}`);
  const optionalIp = (name: string): string | undefined => {
    const v = env[name]?.trim();
    if (!v) return undefined;
    if (!net.isIP(v)) throw new UsageError(`${name}="${v}" is not an IP address`);
    return v;
  };
  const podIp = required('TP_POD_IP', '10.244.0.7');
  if (!net.isIP(podIp)) throw new UsageError(`TP_POD_IP="${podIp}" is not an IP address`);
  let logLevel: Level;
  try {
    logLevel = parseLevel(env.TP_LOG_LEVEL);
  } catch (e) {
    throw new UsageError(`TP_LOG_LEVEL: ${(e as Error).message}`);
  }
  const ports = parsePortMappings(required('TP_PORTS', '8080:15001'));
  const probePortText = env.TP_PROBE_PORT?.trim();
  const probePort = probePortText ? parsePort(probePortText, 'TP_PROBE_PORT') : undefined;
  const probes = decodeProbes(env.TP_PROBES);
  if (probes.length > 0 && probePort === undefined)
    throw new UsageError('TP_PROBES is set but TP_PROBE_PORT is not: the kubelet reaches the probes there');
  if (probePort !== undefined && ports.some((p) => p.agentPort === probePort || p.appPort === probePort))
    throw new UsageError(
      `TP_PROBE_PORT=${probePort} is also in TP_PORTS: the probe port must be one capture leaves alone`,
    );
  return {
    managerAddress: parseHostPort(
      required('TP_MANAGER_ADDRESS', 'traffic-manager.tp:8081'),
      'TP_MANAGER_ADDRESS',
    ),
    workloadName: required('TP_WORKLOAD_NAME', 'echo'),
    workloadKind: env.TP_WORKLOAD_KIND?.trim() || 'Standalone',
    namespace: env.TP_NAMESPACE?.trim() || 'default',
    podName: required('TP_POD_NAME', 'echo-0'),
    podIp,
    ports,
    probePort,
    probes,
    mechanism,
    listenAddress: optionalIp('TP_LISTEN_ADDRESS') ?? '',
    appEnvFile: env.TP_APP_ENV_FILE?.trim() || undefined,
    logLevel,
    bpfPinRoot: env.TP_BPF_PIN_ROOT?.trim() || undefined,
    mountsDir: env.TP_MOUNTS_DIR?.trim() || undefined,
    managerTokenFile: env.TP_MANAGER_TOKEN_FILE?.trim() || undefined,
    workstationDialDeadlineMs: env.TP_WORKSTATION_DIAL_DEADLINE?.trim()
      ? parseDuration(env.TP_WORKSTATION_DIAL_DEADLINE.trim(), 'TP_WORKSTATION_DIAL_DEADLINE')
      : DEFAULT_WORKSTATION_DIAL_DEADLINE_MS,
  };
}

/** The agent ports and the app ports each one serves (several app ports may share one agent port). */
export function listenersOf(ports: PortMapping[]): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const p of ports) out.set(p.agentPort, [...(out.get(p.agentPort) ?? []), p.appPort]);
  return out;
}
