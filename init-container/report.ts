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

export function formatCleaned(cleaned: CleanedFamily[]): string {
  if (cleaned.length === 0) return 'nothing to clean: no tp chains are installed\n';
  return `${cleaned
    .map(
      (c) =>
        `${familyLabel(c.family)} (${c.backend} backend): removed ${c.jumps} jumps and chains ${c.chains.join(', ')}`,
    )
    .join('\n')}\n`;
}
