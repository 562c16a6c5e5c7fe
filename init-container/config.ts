// What tp-init captures: parsed and checked once, from the flags, before anything touches the kernel.
import type * as os from 'node:os';
import { parsePort, parsePortList, UsageError } from '../netaddr/parse.js';

export type Ipv6Mode = 'auto' | 'on' | 'off';
export type BackendChoice = 'auto' | 'nft' | 'legacy';
export type Family = 4 | 6;

export interface CaptureConfig {
  /** The app ports whose inbound connections go to the agent; 'all' captures every TCP port. */
  appPorts: number[] | 'all';
  /** Ports never captured (only meaningful with appPorts 'all'). */
  excludePorts: number[];
  /** Where the agent listens; one listener serves every app port (it reads SO_ORIGINAL_DST). */
  agentPort: number;
  /** The agent's UID: its own connections are never captured. */
  agentUid: number;
  ipv6: Ipv6Mode;
  backend: BackendChoice;
}

export interface CaptureFlags {
  ports?: string;
  excludePorts?: string;
  agentPort?: string;
  agentUid?: string;
  ipv6?: string;
  backend?: string;
}

export const DEFAULT_AGENT_PORT = 15001;
export const DEFAULT_AGENT_UID = 7777;

function oneOf<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`invalid ${flag} "${value}": use one of ${allowed.join(', ')}`);
}

export function parseAgentUid(value: string): number {
  const s = value.trim();
  if (!/^\d+$/.test(s) || Number(s) > 4294967294)
    throw new UsageError(`invalid --agent-uid "${value}": expected a numeric UID, e.g. 7777`);
  const uid = Number(s);
  if (uid === 0)
    throw new UsageError(
      '--agent-uid 0 would leave every process running as root uncaptured: run the agent as its own UID, e.g. 7777',
    );
  return uid;
}

export function captureConfigFromFlags(flags: CaptureFlags): CaptureConfig {
  const portsText = (flags.ports ?? '').trim();
  if (portsText === '')
    throw new UsageError(
      '--ports is required: the app ports to capture, e.g. --ports 8080,9090 (or "*" for all)',
    );
  const appPorts = portsText === '*' ? ('all' as const) : parsePortList(portsText, 'app port');
  const excludePorts = parsePortList(flags.excludePorts ?? '', 'excluded port');
  const agentPort =
    flags.agentPort === undefined ? DEFAULT_AGENT_PORT : parsePort(flags.agentPort, 'agent port');
  const agentUid = flags.agentUid === undefined ? DEFAULT_AGENT_UID : parseAgentUid(flags.agentUid);

  if (appPorts !== 'all') {
    if (appPorts.includes(agentPort))
      throw new UsageError(
        `agent port ${agentPort} is also an app port in --ports: choose an --agent-port the app does not listen on`,
      );
    const both = excludePorts.filter((p) => appPorts.includes(p));
    if (both.length > 0)
      throw new UsageError(
        `port ${both.join(',')} is both captured (--ports) and excluded (--exclude-ports): remove it from one of them`,
      );
    if (excludePorts.length > 0)
      throw new UsageError(
        '--exclude-ports only applies with --ports "*": with a list of ports, every other port is already left alone',
      );
  } else if (excludePorts.includes(agentPort)) {
    throw new UsageError(
      `agent port ${agentPort} is in --exclude-ports: the agent port must stay reachable, remove it from the list`,
    );
  }

  return {
    appPorts,
    excludePorts,
    agentPort,
    agentUid,
    ipv6: oneOf(flags.ipv6 ?? 'auto', ['auto', 'on', 'off'] as const, '--ipv6'),
    backend: oneOf(flags.backend ?? 'auto', ['auto', 'nft', 'legacy'] as const, '--backend'),
  };
}

/**
 * Whether the pod has an IPv6 address other pods can reach (not loopback, not link-local):
 * the first half of `--ipv6 auto`; the second half is whether ip6tables nat works.
 */
export function hasGlobalIpv6(interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>): boolean {
  for (const addresses of Object.values(interfaces)) {
    for (const a of addresses ?? []) {
      if (a.family !== 'IPv6' || a.internal) continue;
      if (/^fe[89ab][0-9a-f]:/i.test(a.address)) continue;
      return true;
    }
  }
  return false;
}
