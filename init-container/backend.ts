// Which iptables backend a pod uses. The nft and legacy backends share nothing: rules written with one are
// invisible to the other, so tp must write where the pod's other rules already live. Like Istio: legacy when
// it already holds rules, else nft. Probing only runs the save commands without `-t`, which list existing
// tables and never create one (a `-t nat` with the wrong binary would leave "legacy tables present" behind).
import { UsageError } from '../netaddr/parse.js';
import type { CommandResult, CommandRunner } from './command-runner.js';
import type { BackendChoice, Family } from './config.js';
import { holdsRules, holdsTp, parseSavedTable } from './saved-rules.js';
import { explainXtablesFailure, isPermissionDenied, noIptablesBinary } from './xtables-errors.js';

export type BackendName = 'nft' | 'legacy';

export interface XtablesBackend {
  name: BackendName;
  family: Family;
  /** `iptables-nft`, `ip6tables-legacy`, … (or the plain name when the image has only one variant). */
  iptables: string;
  save: string;
  restore: string;
}

export interface BackendProbe {
  backend: XtablesBackend;
  /** `save -c` output: every table this backend holds in the namespace. */
  saved: string;
}

function binaries(name: BackendName, family: Family, plain: boolean): XtablesBackend {
  const base = family === 4 ? 'iptables' : 'ip6tables';
  const stem = plain ? base : `${base}-${name}`;
  return { name, family, iptables: stem, save: `${stem}-save`, restore: `${stem}-restore` };
}

export function familyLabel(family: Family): string {
  return family === 4 ? 'IPv4' : 'IPv6';
}

async function probe(runner: CommandRunner, backend: XtablesBackend): Promise<BackendProbe | undefined> {
  const result: CommandResult = await runner.run(backend.save, ['-c']);
  if (result.notFound) return undefined;
  if (result.code !== 0) {
    if (isPermissionDenied(result.stderr))
      throw explainXtablesFailure(`reading the ${backend.name} rules`, backend, result);
    // A backend the kernel does not support (no nf_tables, no ip_tables) simply is not a candidate.
    return undefined;
  }
  return { backend, saved: result.stdout };
}

/** Every backend usable in this namespace for one family, with what it already holds. */
export async function probeBackends(runner: CommandRunner, family: Family): Promise<BackendProbe[]> {
  const found: BackendProbe[] = [];
  for (const name of ['legacy', 'nft'] as const) {
    const p = await probe(runner, binaries(name, family, false));
    if (p) found.push(p);
  }
  if (found.length > 0) return found;
  // Images with a single iptables variant ship only the plain names; ask it which one it is.
  const plainVersion = await runner.run(family === 4 ? 'iptables' : 'ip6tables', ['--version']);
  if (plainVersion.notFound || plainVersion.code !== 0) return [];
  const name: BackendName = /nf_tables/.test(plainVersion.stdout) ? 'nft' : 'legacy';
  const p = await probe(runner, binaries(name, family, true));
  return p ? [p] : [];
}

export function probeHoldsTp(p: BackendProbe): boolean {
  return holdsTp(parseSavedTable(p.saved));
}

/**
 * Picks the backend: the forced one; else the one already holding tp's chains (so re-apply, status and
 * cleanup see what apply wrote); else legacy if it holds any rule; else `fallback` (IPv6 follows IPv4's
 * choice), else nft.
 */
export function chooseBackend(
  probes: BackendProbe[],
  choice: BackendChoice,
  family: Family,
  fallback: BackendName = 'nft',
): XtablesBackend {
  if (probes.length === 0) throw noIptablesBinary(family);
  if (choice !== 'auto') {
    const forced = probes.find((p) => p.backend.name === choice);
    if (!forced)
      throw new UsageError(
        `--backend ${choice}: the ${choice} backend for ${familyLabel(family)} is not usable here (its binaries are missing or the kernel lacks it); use --backend auto`,
      );
    return forced.backend;
  }
  const withTp = probes.find(probeHoldsTp);
  if (withTp) return withTp.backend;
  const legacy = probes.find((p) => p.backend.name === 'legacy');
  if (legacy && holdsRules(legacy.saved)) return legacy.backend;
  return (probes.find((p) => p.backend.name === fallback) ?? probes[0]!).backend;
}
