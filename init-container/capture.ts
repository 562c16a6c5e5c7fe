// apply, status and cleanup: the rendered rules meet the kernel through a CommandRunner.
// apply is all-or-nothing: every family's transaction is tested first, then committed in turn; if a later
// family fails, the earlier ones are restored to the snapshot taken just before.
import type * as os from 'node:os';
import type { Logger } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import {
  type BackendName,
  type BackendProbe,
  chooseBackend,
  familyLabel,
  probeBackends,
  probeHoldsTp,
  type XtablesBackend,
} from './backend.js';
import type { CommandResult, CommandRunner } from './command-runner.js';
import { type CaptureConfig, type Family, hasGlobalIpv6 } from './config.js';
import { extensionsUsedBy, findMissingExtension } from './diagnose.js';
import {
  describeConfig,
  type Rule,
  type RuleSet,
  renderApplyTransaction,
  renderDryRun,
  renderRules,
  ruleLine,
  TP_CHAINS,
} from './render.js';
import {
  inferCapture,
  parseSavedTable,
  renderCleanupTransaction,
  type SavedRule,
  type SavedTable,
  tpJumpsIn,
  tpLinesIn,
} from './saved-rules.js';
import {
  explainXtablesFailure,
  failingLine,
  failureDetail,
  knownXtablesFailure,
  missingExtension,
  noIptablesBinary,
} from './xtables-errors.js';

export interface CaptureEnv {
  runner: CommandRunner;
  log: Logger;
  /** The pod's interfaces (`os.networkInterfaces()`), for `--ipv6 auto`. */
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>;
}

interface FamilyTarget {
  family: Family;
  backend: XtablesBackend;
  ruleSet: RuleSet;
}

const RESTORE_ARGS = ['--noflush', '-w', '30'];

function jumpTarget(rule: Rule): string {
  return rule.spec[rule.spec.length - 1]!;
}

// ---- which families, which backend ----

async function ipv4Target(env: CaptureEnv, config: CaptureConfig): Promise<FamilyTarget> {
  const backend = chooseBackend(await probeBackends(env.runner, 4), config.backend, 4);
  return { family: 4, backend, ruleSet: renderRules(config, 4) };
}

/** `--ipv6 auto`: on when the pod has a global IPv6 address and ip6tables nat accepts the rules. */
async function ipv6Target(
  env: CaptureEnv,
  config: CaptureConfig,
  ipv4Backend: BackendName,
): Promise<FamilyTarget | undefined> {
  if (config.ipv6 === 'off') return undefined;
  const auto = config.ipv6 === 'auto';
  if (auto && !hasGlobalIpv6(env.interfaces)) {
    env.log.info('IPv6 capture off: the pod has no global IPv6 address');
    return undefined;
  }
  const probes = await probeBackends(env.runner, 6);
  if (auto && probes.length === 0) {
    env.log.warn('IPv6 capture off: the pod has a global IPv6 address but no usable ip6tables');
    return undefined;
  }
  const backend = chooseBackend(probes, config.backend, 6, ipv4Backend);
  const ruleSet = renderRules(config, 6);
  if (auto) {
    const test = await env.runner.run(
      backend.restore,
      [...RESTORE_ARGS, '--test'],
      renderDryRun(config, ruleSet),
    );
    if (test.code !== 0) {
      env.log.warn('IPv6 capture off: ip6tables nat does not accept the rules here', {
        reason: failureDetail(backend, test),
      });
      return undefined;
    }
  }
  return { family: 6, backend, ruleSet };
}

async function captureTargets(env: CaptureEnv, config: CaptureConfig): Promise<FamilyTarget[]> {
  const v4 = await ipv4Target(env, config);
  const v6 = await ipv6Target(env, config, v4.backend.name);
  return v6 ? [v4, v6] : [v4];
}

// ---- reading the kernel ----

async function saveNat(env: CaptureEnv, backend: XtablesBackend, step: string): Promise<string> {
  const result = await env.runner.run(backend.save, ['-c', '-t', 'nat']);
  if (result.code !== 0) throw explainXtablesFailure(step, backend, result);
  return result.stdout;
}

/** `iptables -C`: whether the kernel holds this exact rule. */
async function ruleIsInstalled(env: CaptureEnv, backend: XtablesBackend, rule: Rule): Promise<boolean> {
  const result = await env.runner.run(backend.iptables, [
    '-w',
    '30',
    '-t',
    'nat',
    '-C',
    rule.chain,
    ...rule.spec,
  ]);
  if (result.code === 0) return true;
  if (result.code === 1) return false;
  // Exit 2 when the rule names a chain that does not exist (yet): certainly not installed.
  if (result.code === 2 && /does not exist|Couldn't load target|No chain/.test(result.stderr)) return false;
  throw explainXtablesFailure(`checking ${ruleLine(rule)}`, backend, result);
}

// ---- apply ----

interface FamilyPlan extends FamilyTarget {
  /** `save -c -t nat` just before the change: what a rollback restores. */
  snapshot: string;
  transaction: string;
}

async function planFamily(env: CaptureEnv, config: CaptureConfig, target: FamilyTarget): Promise<FamilyPlan> {
  const { backend, ruleSet } = target;
  const snapshot = await saveNat(env, backend, `reading the ${familyLabel(target.family)} nat table`);
  const table = parseSavedTable(snapshot);

  // Jumps into tp chains that are not the rendered ones (another tp version, duplicates) are deleted.
  const renderedLines = new Set(ruleSet.jumps.map((j) => ruleLine(j)));
  const kept = new Set<string>();
  const stale: SavedRule[] = [];
  for (const jump of tpJumpsIn(table)) {
    if (renderedLines.has(jump.line) && !kept.has(jump.line)) kept.add(jump.line);
    else stale.push(jump);
  }

  const missingJumps: Rule[] = [];
  for (const jump of ruleSet.jumps) {
    const target = jumpTarget(jump);
    const present = table.chains.includes(target) && (await ruleIsInstalled(env, backend, jump));
    // -C matched but not as the exact text: the matching line is among the stale ones being deleted.
    const replaced =
      !kept.has(ruleLine(jump)) && stale.some((s) => s.chain === jump.chain && s.target === target);
    if (!present || replaced) missingJumps.push(jump);
  }

  const transaction = renderApplyTransaction(config, ruleSet, {
    missingJumps,
    staleJumpLines: stale.map((s) => s.line),
  });
  return { ...target, snapshot, transaction };
}

/** Why the kernel refused a transaction, naming the missing feature when there is one. */
async function explainRejection(
  env: CaptureEnv,
  config: CaptureConfig,
  plan: FamilyPlan,
  result: CommandResult,
  step: string,
  diagnose: boolean,
): Promise<UsageError> {
  const known = knownXtablesFailure(step, plan.backend, result);
  if (known) return known;
  if (diagnose) {
    const line = failingLine(result.stderr);
    const blamed = line === undefined ? undefined : plan.transaction.split('\n')[line - 1];
    const missing = await findMissingExtension(env.runner, plan.backend, config, extensionsUsedBy(blamed));
    if (missing) return missingExtension(missing, plan.family, failureDetail(plan.backend, result));
  }
  return explainXtablesFailure(step, plan.backend, result);
}

/** Puts a family's nat table back as it was before apply touched it. */
async function rollback(env: CaptureEnv, plan: FamilyPlan): Promise<void> {
  const before = parseSavedTable(plan.snapshot);
  let result: CommandResult;
  if (before.present) {
    // Restoring the saved nat table (without --noflush) replaces it whole, in one transaction.
    result = await env.runner.run(plan.backend.restore, ['-c', '-w', '30'], plan.snapshot);
  } else {
    // The table did not exist before: remove what apply added.
    const now = parseSavedTable(await saveNat(env, plan.backend, 'reading the nat table for rollback'));
    const cleanup = renderCleanupTransaction(now);
    if (!cleanup) return;
    result = await env.runner.run(plan.backend.restore, RESTORE_ARGS, cleanup);
  }
  if (result.code !== 0)
    throw explainXtablesFailure(`rolling back the ${familyLabel(plan.family)} rules`, plan.backend, result);
  env.log.info(`rolled back the ${familyLabel(plan.family)} rules`);
}

export interface AppliedFamily {
  family: Family;
  backend: BackendName;
  description: string;
  /** The command an admin runs to see the rules, e.g. `iptables-nft-save -t nat`. */
  saveCommand: string;
  /** tp's lines in `iptables-save -t nat` after the apply. */
  installed: string[];
}

export async function applyCapture(env: CaptureEnv, config: CaptureConfig): Promise<AppliedFamily[]> {
  const targets = await captureTargets(env, config);
  const plans: FamilyPlan[] = [];
  for (const target of targets) plans.push(await planFamily(env, config, target));

  // Parse errors and missing userspace extensions surface here, before any family changes.
  for (const plan of plans) {
    const result = await env.runner.run(plan.backend.restore, [...RESTORE_ARGS, '--test'], plan.transaction);
    if (result.code !== 0)
      throw await explainRejection(
        env,
        config,
        plan,
        result,
        `checking the ${familyLabel(plan.family)} rules`,
        false,
      );
  }

  const committed: FamilyPlan[] = [];
  for (const plan of plans) {
    const result = await env.runner.run(plan.backend.restore, RESTORE_ARGS, plan.transaction);
    if (result.code !== 0) {
      const rollbackFailures: string[] = [];
      for (const done of committed.reverse()) {
        try {
          await rollback(env, done);
        } catch (err) {
          rollbackFailures.push((err as Error).message);
        }
      }
      const error = await explainRejection(
        env,
        config,
        plan,
        result,
        `applying the ${familyLabel(plan.family)} rules`,
        true,
      );
      if (rollbackFailures.length > 0)
        error.message += `; rolling back the families applied before failed too: ${rollbackFailures.join('; ')}`;
      throw error;
    }
    committed.push(plan);
    env.log.debug(`applied the ${familyLabel(plan.family)} rules`, { backend: plan.backend.name });
  }

  const applied: AppliedFamily[] = [];
  for (const plan of plans) {
    const status = await inspectFamily(env, plan);
    if (!status.inPlace)
      throw new UsageError(
        `the ${familyLabel(plan.family)} rules are not in place after apply: ${status.problems.join('; ')}`,
      );
    applied.push({
      family: plan.family,
      backend: plan.backend.name,
      description: describeConfig(config, plan.family),
      saveCommand: `${plan.backend.save} -t nat`,
      installed: status.installed,
    });
  }
  return applied;
}

/** What --dry-run prints: the restore input of each family, without running anything. */
export function dryRunCapture(
  config: CaptureConfig,
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>,
): string {
  const families: Family[] = [4];
  if (config.ipv6 === 'on' || (config.ipv6 === 'auto' && hasGlobalIpv6(interfaces))) families.push(6);
  return families
    .map((family) => {
      const tool = family === 4 ? 'iptables-restore' : 'ip6tables-restore';
      return (
        `# ${tool} ${RESTORE_ARGS.join(' ')}  (the jumps from PREROUTING and OUTPUT are only added when missing)\n` +
        renderDryRun(config, renderRules(config, family))
      );
    })
    .join('\n');
}

// ---- status ----

export interface RuleStatus {
  line: string;
  present: boolean;
  packets?: number;
  bytes?: number;
}

export interface ChainStatus {
  name: string;
  present: boolean;
  rules: number;
  expectedRules: number;
}

export interface FamilyStatus {
  family: Family;
  backend: BackendName;
  inPlace: boolean;
  chains: ChainStatus[];
  /** The rendered rules, then the rendered jumps, each checked with `iptables -C`. */
  rules: RuleStatus[];
  /** Lines in tp's chains, or jumps into them, that apply would not have written. */
  unexpected: string[];
  problems: string[];
  installed: string[];
  /** Status without flags: the capture read back from the rules (describeConfig). */
  capture?: string;
}

export interface CaptureStatus {
  inPlace: boolean;
  families: FamilyStatus[];
}

function countersOf(table: SavedTable, line: string): Pick<RuleStatus, 'packets' | 'bytes'> {
  const saved = table.rules.find((r) => r.line === line);
  return saved?.packets === undefined ? {} : { packets: saved.packets, bytes: saved.bytes! };
}

async function inspectFamily(env: CaptureEnv, target: FamilyTarget): Promise<FamilyStatus> {
  const { backend, ruleSet } = target;
  const table = parseSavedTable(
    await saveNat(env, backend, `reading the ${familyLabel(target.family)} nat table`),
  );
  const problems: string[] = [];

  const chains: ChainStatus[] = TP_CHAINS.map((name) => ({
    name,
    present: table.chains.includes(name),
    rules: table.rules.filter((r) => r.chain === name).length,
    expectedRules: ruleSet.rules.filter((r) => r.chain === name).length,
  }));
  for (const c of chains) {
    if (!c.present) problems.push(`chain ${c.name} is missing`);
    else if (c.rules !== c.expectedRules)
      problems.push(`chain ${c.name} has ${c.rules} rules, expected ${c.expectedRules}`);
  }

  const rules: RuleStatus[] = [];
  for (const rule of [...ruleSet.rules, ...ruleSet.jumps]) {
    const line = ruleLine(rule);
    const chainPresent = !rule.chain.startsWith('TP_') || table.chains.includes(rule.chain);
    const targetPresent = !jumpTarget(rule).startsWith('TP_') || table.chains.includes(jumpTarget(rule));
    const present = chainPresent && targetPresent && (await ruleIsInstalled(env, backend, rule));
    if (!present) problems.push(`rule missing: ${line}`);
    rules.push({ line, present, ...countersOf(table, line) });
  }

  const renderedLines = new Set(rules.map((r) => r.line));
  const jumps = tpJumpsIn(table);
  if (jumps.length > ruleSet.jumps.length)
    problems.push(`${jumps.length} jumps into tp chains, expected ${ruleSet.jumps.length}`);
  const unexpected: string[] = [];
  // Only when the counts disagree: with equal counts and every rule found by -C, a textual difference is
  // just another iptables version printing the same rule differently.
  if (problems.length > 0) {
    const seen = new Set<string>();
    for (const r of [...jumps, ...table.rules.filter((r) => r.chain.startsWith('TP_'))]) {
      if (!renderedLines.has(r.line) || seen.has(r.line)) unexpected.push(r.line);
      seen.add(r.line);
    }
  }

  return {
    family: target.family,
    backend: backend.name,
    inPlace: problems.length === 0,
    chains,
    rules,
    unexpected,
    problems,
    installed: tpLinesIn(table),
  };
}

export async function captureStatus(env: CaptureEnv, config: CaptureConfig): Promise<CaptureStatus> {
  const families: FamilyStatus[] = [];
  for (const target of await captureTargets(env, config)) families.push(await inspectFamily(env, target));
  return { inPlace: families.every((f) => f.inPlace), families };
}

/** Each family and backend whose nat table holds tp's chains or jumps; no IPv4 iptables at all is an error. */
async function backendsHoldingTp(env: CaptureEnv): Promise<{ family: Family; probe: BackendProbe }[]> {
  const found: { family: Family; probe: BackendProbe }[] = [];
  for (const family of [4, 6] as const) {
    const probes = await probeBackends(env.runner, family);
    if (probes.length === 0 && family === 4) throw noIptablesBinary(4);
    for (const probe of probes.filter(probeHoldsTp)) found.push({ family, probe });
  }
  return found;
}

/**
 * `tp-init status` without flags: every family and backend holding tp's chains, each checked against what
 * apply installs with the flags read back from those rules (saved-rules.ts inferCapture). Nothing found
 * anywhere is not in place (families empty).
 */
export async function discoverCaptureStatus(env: CaptureEnv): Promise<CaptureStatus> {
  const families: FamilyStatus[] = [];
  for (const { family, probe } of await backendsHoldingTp(env)) {
    const inferred = inferCapture(parseSavedTable(probe.saved));
    const config: CaptureConfig = {
      ...inferred,
      ipv6: family === 6 ? 'on' : 'off',
      backend: probe.backend.name,
    };
    const status = await inspectFamily(env, {
      family,
      backend: probe.backend,
      ruleSet: renderRules(config, family),
    });
    const unreadable: string[] = [];
    if (inferred.appPorts !== 'all' && inferred.appPorts.length === 0)
      unreadable.push('no capture rule in TP_INBOUND: which app ports were captured cannot be read back');
    if (!inferred.agentPort)
      unreadable.push('no REDIRECT rule in TP_REDIRECT: the agent port cannot be read back');
    if (!inferred.agentUid)
      unreadable.push("no owner rule in TP_OUTPUT: the agent's UID cannot be read back");
    families.push({
      ...status,
      capture: describeConfig(config, family),
      problems: [...unreadable, ...status.problems],
      inPlace: status.inPlace && unreadable.length === 0,
    });
  }
  return { inPlace: families.length > 0 && families.every((f) => f.inPlace), families };
}

// ---- cleanup ----

export interface CleanedFamily {
  family: Family;
  backend: BackendName;
  chains: string[];
  jumps: number;
}

/** Removes tp's chains and jumps from every family and backend that holds them; nothing to do is success. */
export async function cleanupCapture(env: CaptureEnv): Promise<CleanedFamily[]> {
  const cleaned: CleanedFamily[] = [];
  for (const { family, probe } of await backendsHoldingTp(env)) {
    const { backend } = probe;
    const table = parseSavedTable(probe.saved);
    const transaction = renderCleanupTransaction(table)!;
    const step = `removing the ${familyLabel(family)} rules`;
    const result = await env.runner.run(backend.restore, RESTORE_ARGS, transaction);
    if (result.code !== 0) throw explainXtablesFailure(step, backend, result);
    const after = parseSavedTable(await saveNat(env, backend, step));
    const residue = tpLinesIn(after);
    if (residue.length > 0)
      throw new UsageError(`${step}: these remain after cleanup: ${residue.join(' | ')}; run cleanup again`);
    cleaned.push({
      family,
      backend: backend.name,
      chains: table.chains.filter((c) => c.startsWith('TP_')),
      jumps: tpJumpsIn(table).length,
    });
  }
  return cleaned;
}
