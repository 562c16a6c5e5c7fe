// The configuration of the eBPF capture mechanism and the pure decisions made from it.
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';
import { DEFAULT_PIN_ROOT, MAX_CAPTURED_PORTS } from './steering-keys.js';

export interface EbpfCaptureConfig {
  /** The app ports whose inbound TCP connections the agent may take over (captured ports). */
  ports: number[];
  /** The network namespace to attach to; the caller's own by default. */
  netnsPath: string;
  /** The bpffs directory holding one pin directory per network namespace. */
  pinRoot: string;
  /** The compiled program; dist/bpf/tp_steer.bpf.o by default. */
  objectPath?: string;
  /**
   * The agent's UID when it does not run as root: the pins it opens (tp_ports, tp_listeners) are handed to
   * it, so it can steer without capabilities on Linux >= 6.5 (older kernels also want CAP_BPF).
   */
  agentUid?: number;
}

export const DEFAULT_NETNS_PATH = '/proc/self/ns/net';

/** Checks a config from tp-init or the CLI; throws UsageError naming the problem and the fix. */
export function validateCaptureConfig(input: {
  ports: readonly number[];
  netnsPath?: string;
  pinRoot?: string;
  objectPath?: string;
  agentUid?: number;
}): EbpfCaptureConfig {
  const ports = [...input.ports];
  if (ports.length === 0) {
    throw new UsageError('no ports to capture: pass the app ports, e.g. --ports 8080,9090');
  }
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      throw new UsageError(`invalid port ${p}: expected a number from 1 to 65535`);
    }
  }
  if (new Set(ports).size !== ports.length) {
    throw new UsageError(`port list ${ports.join(',')} names a port twice: list each port once`);
  }
  if (ports.length > MAX_CAPTURED_PORTS) {
    throw new UsageError(
      `${ports.length} ports to capture, the eBPF program holds at most ${MAX_CAPTURED_PORTS}: capture fewer ports or use --mechanism iptables`,
    );
  }
  const netnsPath = input.netnsPath ?? DEFAULT_NETNS_PATH;
  const pinRoot = input.pinRoot ?? DEFAULT_PIN_ROOT;
  for (const [what, p] of [
    ['network namespace path', netnsPath],
    ['pin root', pinRoot],
  ] as const) {
    if (!path.isAbsolute(p)) throw new UsageError(`${what} "${p}" must be an absolute path`);
  }
  if (input.objectPath !== undefined && !path.isAbsolute(input.objectPath)) {
    throw new UsageError(`eBPF object path "${input.objectPath}" must be an absolute path`);
  }
  const uid = input.agentUid;
  if (uid !== undefined && (!Number.isInteger(uid) || uid < 0 || uid > 4294967294)) {
    throw new UsageError(`invalid agent UID ${uid}: expected a numeric UID, e.g. 7777`);
  }
  return {
    ports: ports.sort((a, b) => a - b),
    netnsPath,
    pinRoot: path.resolve(pinRoot),
    ...(input.objectPath ? { objectPath: input.objectPath } : {}),
    // Root needs no hand-over.
    ...(uid ? { agentUid: uid } : {}),
  };
}

export interface PortChanges {
  add: number[];
  remove: number[];
}

/** What turns the captured ports in the map into the wanted ones; both empty means nothing to do. */
export function planPortChanges(current: readonly number[], wanted: readonly number[]): PortChanges {
  const have = new Set(current);
  const want = new Set(wanted);
  return {
    add: [...want].filter((p) => !have.has(p)).sort((a, b) => a - b),
    remove: [...have].filter((p) => !want.has(p)).sort((a, b) => a - b),
  };
}

/** Parses a kernel release ("6.1.0-18-amd64") into [major, minor]; undefined when it has no version. */
export function kernelVersion(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/** sk_lookup programs exist since Linux 5.9. */
export function kernelHasSkLookup(release: string): boolean {
  const v = kernelVersion(release);
  if (!v) return false;
  return v[0] > 5 || (v[0] === 5 && v[1] >= 9);
}

/** Capability bits (linux/capability.h) that loading, attaching and handing over the program need. */
export const CAP_CHOWN = 0;
export const CAP_NET_ADMIN = 12;
export const CAP_SYS_ADMIN = 21;
export const CAP_PERFMON = 38;
export const CAP_BPF = 39;

/**
 * Which capabilities are missing from an effective set (CapEff of /proc/self/status, hex). Loading a
 * networking program and creating a SOCKHASH need CAP_BPF with CAP_NET_ADMIN; the verifier accepts
 * tp_steer's socket lookups only with CAP_PERFMON as well (without it the load fails with EACCES, seen under
 * runc with exactly NET_ADMIN, NET_RAW and BPF); CAP_SYS_ADMIN stands in for both BPF and PERFMON.
 * Attaching to a network namespace needs CAP_NET_ADMIN in it, and giving the agent its two maps (agentUid)
 * needs CAP_CHOWN.
 */
export function missingCapabilities(capEffHex: string, opts: { chown?: boolean } = {}): string[] {
  const caps = BigInt(`0x${capEffHex.trim() || '0'}`);
  const has = (bit: number) => (caps & (1n << BigInt(bit))) !== 0n;
  const missing: string[] = [];
  if (!has(CAP_NET_ADMIN)) missing.push('CAP_NET_ADMIN');
  if (!has(CAP_BPF) && !has(CAP_SYS_ADMIN)) missing.push('CAP_BPF (or CAP_SYS_ADMIN)');
  if (!has(CAP_PERFMON) && !has(CAP_SYS_ADMIN)) missing.push('CAP_PERFMON (or CAP_SYS_ADMIN)');
  if (opts.chown && !has(CAP_CHOWN)) missing.push("CAP_CHOWN (to give the agent's UID its maps)");
  return missing;
}
