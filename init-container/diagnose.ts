// When the kernel rejects a transaction without saying why (the legacy backend reports only "line N failed",
// N being COMMIT), find the missing feature by installing one throwaway rule per feature in a probe chain
// and removing it again. Runs only after a failure, so a working node never sees a probe chain.
import type { XtablesBackend } from './backend.js';
import type { CommandRunner } from './command-runner.js';
import type { CaptureConfig } from './config.js';
import { CHAIN_PREFIX } from './render.js';
import type { Extension } from './xtables-errors.js';

/** tp-prefixed, so even a probe chain left by a crash is removed by `tp-init cleanup`. */
export const PROBE_CHAIN = `${CHAIN_PREFIX}PROBE`;

/** In the order they are tried: the table first, since every rule needs it. */
const ALL_EXTENSIONS: Extension[] = ['nat', 'comment', 'multiport', 'owner', 'REDIRECT'];

/** The features a restore input line uses; every feature when the line is not a rule. */
export function extensionsUsedBy(line: string | undefined): Extension[] {
  if (line === undefined || !line.startsWith('-A ')) return ALL_EXTENSIONS;
  const used: Extension[] = ['nat'];
  if (/ -m comment /.test(line)) used.push('comment');
  if (/ -m multiport /.test(line)) used.push('multiport');
  if (/ -m owner /.test(line)) used.push('owner');
  if (/ -j REDIRECT/.test(line)) used.push('REDIRECT');
  return used;
}

export function renderProbeTransaction(extension: Extension, config: CaptureConfig): string {
  const rule: Record<Extension, string | undefined> = {
    nat: undefined,
    comment: `-A ${PROBE_CHAIN} -m comment --comment "tp probe" -j RETURN`,
    multiport: `-A ${PROBE_CHAIN} -p tcp -m multiport --dports ${config.agentPort} -j RETURN`,
    owner: `-A ${PROBE_CHAIN} -m owner --uid-owner ${config.agentUid} -j RETURN`,
    REDIRECT: `-A ${PROBE_CHAIN} -p tcp -j REDIRECT --to-ports ${config.agentPort}`,
  };
  const lines = ['*nat', `:${PROBE_CHAIN} - [0:0]`];
  const r = rule[extension];
  if (r) lines.push(r);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

export const REMOVE_PROBE_TRANSACTION = `*nat\n-F ${PROBE_CHAIN}\n-X ${PROBE_CHAIN}\nCOMMIT\n`;

/** The first of `candidates` the kernel refuses, or undefined when it accepts them all. */
export async function findMissingExtension(
  runner: CommandRunner,
  backend: XtablesBackend,
  config: CaptureConfig,
  candidates: Extension[],
): Promise<Extension | undefined> {
  for (const extension of candidates) {
    const result = await runner.run(
      backend.restore,
      ['--noflush', '-w', '30'],
      renderProbeTransaction(extension, config),
    );
    if (result.code !== 0) return extension;
    await runner.run(backend.restore, ['--noflush', '-w', '30'], REMOVE_PROBE_TRANSACTION);
  }
  return undefined;
}
