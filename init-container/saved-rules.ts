// Reading iptables-save output: which tp chains and jumps are installed, their packet counters, and the
// transaction that removes them. Pure functions over the text the save command printed.
import { CHAIN_PREFIX } from './render.js';

export interface SavedRule {
  chain: string;
  /** `-A CHAIN …` without counters, exactly as printed (it round-trips into iptables-restore). */
  line: string;
  /** The chain or target the rule jumps to (`-j`/`-g`), if any. */
  target?: string;
  /** Counters, present when the save ran with `-c`. */
  packets?: number;
  bytes?: number;
}

export interface SavedTable {
  /** Whether the save printed this table at all. */
  present: boolean;
  /** Every chain the table declares, built-in ones included, in the printed order. */
  chains: string[];
  rules: SavedRule[];
}

/** The `*nat` section (or another table's) of iptables-save output. */
export function parseSavedTable(saveOutput: string, table = 'nat'): SavedTable {
  const result: SavedTable = { present: false, chains: [], rules: [] };
  let inside = false;
  for (const raw of saveOutput.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      inside = line === `*${table}`;
      if (inside) result.present = true;
      continue;
    }
    if (!inside) continue;
    if (line === 'COMMIT') {
      inside = false;
      continue;
    }
    if (line.startsWith(':')) {
      result.chains.push(line.slice(1).split(' ')[0]!);
      continue;
    }
    const m = /^(?:\[(\d+):(\d+)\]\s+)?(-A\s+(\S+).*)$/.exec(line);
    if (!m) continue;
    const rule: SavedRule = { chain: m[4]!, line: m[3]! };
    const target = /\s-[jg]\s+(\S+)/.exec(m[3]!);
    if (target) rule.target = target[1]!;
    if (m[1] !== undefined) {
      rule.packets = Number(m[1]);
      rule.bytes = Number(m[2]);
    }
    result.rules.push(rule);
  }
  return result;
}

/** Whether a save output holds any rule at all, in any table (how a backend "already holds rules"). */
export function holdsRules(saveOutput: string): boolean {
  return /^(\[\d+:\d+\]\s+)?-A /m.test(saveOutput);
}

export function isTpChain(chain: string): boolean {
  return chain.startsWith(CHAIN_PREFIX);
}

export function tpChainsIn(table: SavedTable): string[] {
  return table.chains.filter(isTpChain);
}

/** Rules in chains tp does not own (PREROUTING, OUTPUT, …) that jump into a tp chain. */
export function tpJumpsIn(table: SavedTable): SavedRule[] {
  return table.rules.filter((r) => !isTpChain(r.chain) && r.target !== undefined && isTpChain(r.target));
}

/** Whether anything of tp's is installed in this table. */
export function holdsTp(table: SavedTable): boolean {
  return tpChainsIn(table).length > 0 || tpJumpsIn(table).length > 0;
}

/**
 * One `iptables-restore --noflush` transaction that deletes the jumps into tp's chains and then the chains
 * (whatever their rules, whichever tp version wrote them); undefined when nothing of tp's is installed.
 */
export function renderCleanupTransaction(table: SavedTable): string | undefined {
  if (!holdsTp(table)) return undefined;
  const chains = tpChainsIn(table);
  const lines = ['*nat'];
  for (const jump of tpJumpsIn(table)) lines.push(jump.line.replace(/^-A /, '-D '));
  for (const chain of chains) lines.push(`-F ${chain}`);
  for (const chain of chains) lines.push(`-X ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** What an admin needs to see of the nat table: tp's chain declarations, jumps and rules. */
export function tpLinesIn(table: SavedTable): string[] {
  const lines = tpChainsIn(table).map((c) => `:${c} - [0:0]`);
  for (const jump of tpJumpsIn(table)) lines.push(jump.line);
  for (const rule of table.rules) if (isTpChain(rule.chain)) lines.push(rule.line);
  return lines;
}

/** The flags `apply` ran with, read back from the rules it installed (`tp-init status` without flags). */
export interface InferredCapture {
  appPorts: number[] | 'all';
  excludePorts: number[];
  /** 0 when no TP_REDIRECT rule names it. */
  agentPort: number;
  /** 0 when no TP_OUTPUT rule names it. */
  agentUid: number;
}

function dports(line: string): number[] {
  const m = /--dports\s+(\S+)/.exec(line);
  return m ? m[1]!.split(',').map(Number) : [];
}

/**
 * Reads tp's rules back into what `apply` was told: the app ports from TP_INBOUND's jumps to TP_REDIRECT
 * (one without --dports: every port, its RETURN rules the excluded ones), the agent port from TP_REDIRECT,
 * the agent UID from TP_OUTPUT. Whatever is missing stays empty (0): the status then shows it missing.
 */
export function inferCapture(table: SavedTable): InferredCapture {
  const inbound = table.rules.filter((r) => r.chain === 'TP_INBOUND');
  const captures = inbound.filter((r) => r.target === 'TP_REDIRECT');
  const all = captures.some((r) => dports(r.line).length === 0);
  const unique = (ports: number[]) => [...new Set(ports)];
  const redirect = table.rules.find((r) => r.chain === 'TP_REDIRECT' && /--to-ports\s+\d+/.test(r.line));
  const owner = table.rules.find((r) => r.chain === 'TP_OUTPUT' && /--uid-owner\s+\d+/.test(r.line));
  return {
    appPorts: all ? 'all' : unique(captures.flatMap((r) => dports(r.line))),
    excludePorts: all
      ? unique(inbound.filter((r) => r.target === 'RETURN').flatMap((r) => dports(r.line)))
      : [],
    agentPort: Number(/--to-ports\s+(\d+)/.exec(redirect?.line ?? '')?.[1] ?? 0),
    agentUid: Number(/--uid-owner\s+(\d+)/.exec(owner?.line ?? '')?.[1] ?? 0),
  };
}
