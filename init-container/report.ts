// What tp-init prints: the installed rules after apply (so `kubectl logs POD -c tp-init` shows them), the
// status report, the cleanup summary. Pure text from the results of capture.ts.
import { VERSION } from '../version/version.js';
import { familyLabel } from './backend.js';
import type { AppliedFamily, CaptureStatus, CleanedFamily } from './capture.js';

export function formatApplied(applied: AppliedFamily[]): string {
  const out: string[] = [];
  for (const f of applied) {
    out.push(`tp-init ${VERSION}: ${f.description} (${f.backend} backend)`);
    out.push(`installed, as \`${f.saveCommand}\` shows them:`);
    for (const line of f.installed) out.push(`  ${line}`);
  }
  if (!applied.some((f) => f.family === 6)) out.push('IPv6: not captured');
  return `${out.join('\n')}\n`;
}

function counters(packets?: number, bytes?: number): string {
  return packets === undefined ? '' : ` [${packets} packets, ${bytes} bytes]`;
}

export function formatStatus(status: CaptureStatus): string {
  const out: string[] = [];
  for (const f of status.families) {
    out.push(`${familyLabel(f.family)} (${f.backend} backend): ${f.inPlace ? 'in place' : 'NOT in place'}`);
    if (f.capture) out.push(`  read back: ${f.capture}`);
    for (const c of f.chains) {
      const state = c.present
        ? `${c.rules} rules${c.rules === c.expectedRules ? '' : ` (expected ${c.expectedRules})`}`
        : 'missing';
      out.push(`  chain ${c.name}: ${state}`);
    }
    for (const r of f.rules)
      out.push(`  ${r.present ? 'ok     ' : 'MISSING'} ${r.line}${counters(r.packets, r.bytes)}`);
    for (const u of f.unexpected) out.push(`  EXTRA   ${u}`);
    for (const p of f.problems) out.push(`  problem: ${p}`);
  }
  out.push(
    status.inPlace
      ? 'capture is in place'
      : 'capture is NOT in place: run `tp-init apply` with the same flags to repair it',
  );
  return `${out.join('\n')}\n`;
}

/**
 * `tp-init status` without flags: what was found in each family and backend (each rule: ok or MISSING, its
 * counters; EXTRA lines), or that nothing of tp's is installed.
 */
export function formatDiscoveredStatus(status: CaptureStatus): string {
  if (status.families.length === 0)
    return 'no tp capture rules: no TP_ chains in the nat table of IPv4 or IPv6, nft or legacy backend\n';
  const text = formatStatus(status).split('\n');
  text.splice(
    -2,
    1,
    status.inPlace
      ? 'capture is in place'
      : 'capture is NOT in place (drift from what tp installs): the pod rolled with the agent repairs it, or `tp-init apply` with the flags read back above',
  );
  return text.join('\n');
}

export function formatCleaned(cleaned: CleanedFamily[]): string {
  if (cleaned.length === 0) return 'nothing to clean: no tp chains are installed\n';
  return `${cleaned
    .map(
      (c) =>
        `${familyLabel(c.family)} (${c.backend} backend): removed ${c.jumps} jumps and chains ${c.chains.join(', ')}`,
    )
    .join('\n')}\n`;
}
