// Turning what iptables prints on failure into an error that names the problem and the fix.
import { UsageError } from '../netaddr/parse.js';
import type { XtablesBackend } from './backend.js';
import type { CommandResult } from './command-runner.js';
import type { Family } from './config.js';

/** The kernel features the capture rules need, each of which a node can lack. */
export type Extension = 'nat' | 'comment' | 'multiport' | 'owner' | 'REDIRECT';

export function isPermissionDenied(stderr: string): boolean {
  return /Permission denied|you must be root|Operation not permitted/i.test(stderr);
}

export function noIptablesBinary(family: Family): UsageError {
  const base = family === 4 ? 'iptables' : 'ip6tables';
  return new UsageError(
    `no ${base} binary found on PATH (looked for ${base}-nft-save, ${base}-legacy-save, ${base}): ` +
      'install the iptables package in the tp-init image',
  );
}

function label(family: Family): string {
  return family === 4 ? 'IPv4' : 'IPv6';
}

export function missingExtension(extension: Extension, family: Family, detail: string): UsageError {
  const ipv6Hint = family === 6 ? ', or run with --ipv6 off to capture IPv4 only' : '';
  const module = family === 4 ? 'iptable_nat' : 'ip6table_nat';
  const why: Record<Extension, string> = {
    nat: `the ${label(family)} nat table is not available in this kernel (module ${module}/nf_nat): load it on the node${ipv6Hint}`,
    owner:
      "the kernel lacks the owner match (xt_owner) that keeps the agent's own connections out of capture: " +
      `load xt_owner on the node${ipv6Hint}`,
    REDIRECT: `the kernel lacks the REDIRECT target (xt_REDIRECT/nf_nat) that hands connections to the agent: load it on the node${ipv6Hint}`,
    multiport: `the kernel lacks the multiport match (xt_multiport): load it on the node${ipv6Hint}`,
    comment: `the kernel lacks the comment match (xt_comment): load it on the node${ipv6Hint}`,
  };
  return new UsageError(`${why[extension]} (${detail})`);
}

/** The input line iptables-restore blames, when it names one. */
export function failingLine(stderr: string): number | undefined {
  const m = /Error occurred at line: (\d+)/.exec(stderr) ?? /line (\d+)(?::| failed)/.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

function firstLines(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('Try `'))
    .slice(0, 3)
    .join('; ');
}

/**
 * The error for a failed iptables command when its output names the cause (no permission, lock, a missing
 * match or table); undefined when it does not, e.g. the kernel rejected a rule without saying why.
 */
export function knownXtablesFailure(
  step: string,
  backend: XtablesBackend,
  result: CommandResult,
): UsageError | undefined {
  if (result.notFound)
    return new UsageError(
      `${step}: ${backend.iptables} binaries not found on PATH: install the iptables package in the tp-init image`,
    );
  const err = result.stderr;
  const detail = failureDetail(backend, result);
  if (isPermissionDenied(err))
    return new UsageError(
      `${step}: iptables is not permitted to change the network (${detail}): tp-init needs the NET_ADMIN ` +
        'capability: add securityContext.capabilities.add [NET_ADMIN, NET_RAW] to the tp-init container',
    );
  if (/holding the xtables lock|Resource temporarily unavailable/.test(err))
    return new UsageError(
      `${step}: another process held the xtables lock for 30 s (${detail}): retry, and find what holds /run/xtables.lock`,
    );
  const missing = /Couldn't load (?:match|target) `(owner|multiport|comment|REDIRECT)'/.exec(err);
  if (missing) return missingExtension(missing[1] as Extension, backend.family, detail);
  if (/table [`']nat'|Table does not exist|unable to initialize table 'nat'/.test(err))
    return missingExtension('nat', backend.family, detail);
  return undefined;
}

export function failureDetail(backend: XtablesBackend, result: CommandResult): string {
  return `${backend.name} backend: ${firstLines(result.stderr) || `exit code ${result.code}`}`;
}

/** The error for a failed iptables command: the known cause, else what iptables said. */
export function explainXtablesFailure(
  step: string,
  backend: XtablesBackend,
  result: CommandResult,
): UsageError {
  return (
    knownXtablesFailure(step, backend, result) ??
    new UsageError(`${step} failed (${failureDetail(backend, result)})`)
  );
}
