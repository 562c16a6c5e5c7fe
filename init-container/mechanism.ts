// The one interface of tp's capture mechanisms: iptables (./iptables.ts) and eBPF (bpf/capture-mechanism.ts)
// each implement it, so tp-init's command line (main.ts) picks one and calls it, with no per-mechanism
// branch. Pure here: which mechanism runs (the fallback from eBPF to iptables, saying why), which ones a
// cleanup removes, and how `tp-init status` without flags combines what each one found.
import { UsageError } from '../netaddr/parse.js';
import type { CaptureConfig } from './config.js';

export const MECHANISMS = ['iptables', 'ebpf'] as const;
export type MechanismName = (typeof MECHANISMS)[number];

/** How a mechanism is named in what tp-init prints. */
export const LABEL: Record<MechanismName, string> = { iptables: 'iptables', ebpf: 'eBPF' };

export interface SupportReport {
  supported: boolean;
  /** Why not (or, when supported, what was found): one line a user can act on. */
  reason: string;
}

/** What one mechanism has in place here, as `tp-init status` prints it. */
export interface MechanismStatus {
  /** Anything of this mechanism is installed here (in place or not). */
  found: boolean;
  inPlace: boolean;
  /** The admin's report, ending with a newline. */
  text: string;
  /** What `-o json` prints for it (`tp-init status` without flags: null when nothing is found). */
  json: unknown;
}

/** Why `status` could not read a mechanism's state. */
export interface Unreadable {
  error: string;
  /** Set when the cause is a missing permission (the tp-agent container): the reason, without the fix. */
  permission?: string;
}

export interface CaptureMechanism {
  readonly name: MechanismName;
  /**
   * Can it run here? Only where a mechanism can be missing in ways apply cannot explain itself (eBPF:
   * kernel, capabilities, bpffs, libbpf). Throws a UsageError for a config it can never capture.
   */
  probeSupport?(config?: Pick<CaptureConfig, 'appPorts' | 'agentUid'>): Promise<SupportReport>;
  /** What apply would install, touching nothing. */
  dryRun(config: CaptureConfig): string;
  /** Installs the capture (idempotent); returns what it did, for `kubectl logs POD -c tp-init`. */
  apply(config: CaptureConfig): Promise<string>;
  /** What is installed: checked against config, or (without one) as found from what is there. */
  status(config?: CaptureConfig): Promise<MechanismStatus>;
  /** An error status threw, as an expected "cannot read"; undefined when it is a bug to report as such. */
  unreadable(err: unknown): Unreadable | undefined;
  /** Removes all of it here; nothing installed is success. Returns what it removed. */
  cleanup(): Promise<string>;
}

/** Where a mechanism that cannot run here falls back to. */
const FALLBACK: Partial<Record<MechanismName, MechanismName>> = { ebpf: 'iptables' };

export interface MechanismChoice {
  use: MechanismName;
  /** Set when the requested mechanism cannot run here: the warning tp-init prints. */
  fallback?: string;
}

/** The mechanism apply runs: the requested one when it is supported, else its fallback, saying why. */
export function chooseMechanism(
  requested: MechanismName,
  support: SupportReport | undefined,
): MechanismChoice {
  if (!support || support.supported) return { use: requested };
  const fallback = FALLBACK[requested];
  if (!fallback) throw new UsageError(`${LABEL[requested]} capture is not available: ${support.reason}`);
  return {
    use: fallback,
    fallback: `${LABEL[requested]} capture is not available: ${support.reason}; falling back to ${fallback}`,
  };
}

/**
 * What `tp-init cleanup --mechanism NAME` removes, in order: the mechanism and what an apply that fell
 * back from it installed instead.
 */
export function cleanupOrder(requested: MechanismName): MechanismName[] {
  const fallback = FALLBACK[requested];
  return fallback ? [requested, fallback] : [requested];
}

export type Found = { name: MechanismName } & ({ status: MechanismStatus } | { unreadable: Unreadable });

export type CombinedStatus =
  /** Nothing found, and a mechanism could not be read for lack of permission: exit 2 with advice. */
  { cannotRead: string } | { inPlace: boolean; text: string; json: Record<string, unknown> };

/**
 * `tp-init status` without flags, from what each mechanism found: in place when something is installed
 * and everything found is in place and readable. The text holds each mechanism that has something to say
 * (found, or unreadable); when nothing is installed anywhere, each one's "nothing here" line. The JSON has
 * one key per mechanism: its status, `{error}`, or null when nothing of it is installed.
 */
export function combineStatus(found: Found[]): CombinedStatus {
  const anything = found.some((f) => 'status' in f && f.status.found);
  const unreadable = found.flatMap((f) => ('unreadable' in f ? [f.unreadable] : []));
  const permission = unreadable.find((u) => u.permission !== undefined)?.permission;
  if (!anything && permission !== undefined) return { cannotRead: permission };
  const inPlace =
    anything &&
    unreadable.length === 0 &&
    found.every((f) => 'status' in f && (!f.status.found || f.status.inPlace));
  const json: Record<string, unknown> = { inPlace };
  const text: string[] = [];
  for (const f of found) {
    if ('unreadable' in f) {
      json[f.name] = { error: f.unreadable.error };
      text.push(`${LABEL[f.name]}: cannot read: ${f.unreadable.error}`);
    } else {
      json[f.name] = f.status.found ? f.status.json : null;
      if (f.status.found || (!anything && unreadable.length === 0)) text.push(f.status.text.trimEnd());
    }
  }
  return { inPlace, text: `${text.join('\n')}\n`, json };
}
