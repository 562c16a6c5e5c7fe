// The capture rules as pure data: what tp-init installs in the pod's nat table, and the iptables-restore
// transactions that install and remove them. Nothing here runs a command.
import { VERSION } from '../version/version.js';
import type { CaptureConfig, Family } from './config.js';

/** Every chain tp owns starts with this; cleanup removes exactly these chains and the jumps into them. */
export const CHAIN_PREFIX = 'TP_';
/** PREROUTING jumps here: connections arriving at the pod. */
export const INBOUND_CHAIN = 'TP_INBOUND';
/** OUTPUT jumps here: connections made inside the pod. */
export const OUTPUT_CHAIN = 'TP_OUTPUT';
/** The one rule that names the agent port. */
export const REDIRECT_CHAIN = 'TP_REDIRECT';
/** In creation order, which is also the order iptables-save lists them in. */
export const TP_CHAINS = [INBOUND_CHAIN, OUTPUT_CHAIN, REDIRECT_CHAIN] as const;

/** The comment every tp rule carries; `tp:` is how an admin (and `status`) tells tp's rules apart. */
export const COMMENT_TAG = `tp:${VERSION}`;

// The multiport match takes at most 15 ports per rule.
const MULTIPORT_MAX = 15;

export interface Rule {
  chain: string;
  /** The rule's arguments after `-A CHAIN`, in the order iptables-save prints them. */
  spec: string[];
}

export interface RuleSet {
  family: Family;
  /** The rules inside tp's chains, in order. */
  rules: Rule[];
  /** The jumps from the built-in chains into tp's chains. */
  jumps: Rule[];
}

function comment(what: string): string[] {
  return ['-m', 'comment', '--comment', `${COMMENT_TAG} ${what}`];
}

function chunks(ports: number[]): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < ports.length; i += MULTIPORT_MAX) out.push(ports.slice(i, i + MULTIPORT_MAX));
  return out;
}

/** `describe` gets "port 8080" or "ports 8080,9090". */
function portMatches(ports: number[], describe: (ports: string) => string, target: string[]): string[][] {
  return chunks(ports).map((group) => {
    const list = group.join(',');
    const words = `${group.length > 1 ? 'ports' : 'port'} ${list}`;
    return ['-p', 'tcp', '-m', 'multiport', '--dports', list, ...comment(describe(words)), ...target];
  });
}

/** The rule set for one address family. */
export function renderRules(config: CaptureConfig, family: Family): RuleSet {
  const loopback = family === 4 ? '127.0.0.0/8' : '::1/128';
  const toRedirect = ['-j', REDIRECT_CHAIN];
  const rules: Rule[] = [];
  const add = (chain: string, specs: string[][]) => {
    for (const spec of specs) rules.push({ chain, spec });
  };
  const excluded = (ports: string) => `never capture excluded ${ports}`;

  // Inbound: connections arriving from outside the pod (clients; the kubelet's probes of these ports were
  // rewritten by the webhook to the agent's probe port, which is not captured).
  if (config.appPorts === 'all') {
    add(INBOUND_CHAIN, portMatches(config.excludePorts, excluded, ['-j', 'RETURN']));
    add(INBOUND_CHAIN, [
      ['-p', 'tcp', ...comment('capture inbound connections to every TCP port'), ...toRedirect],
    ]);
  } else {
    add(
      INBOUND_CHAIN,
      portMatches(config.appPorts, (ports) => `capture inbound connections to app ${ports}`, toRedirect),
    );
  }

  // In-pod: the agent's own connections first (it dials the app on loopback, and anything else it needs),
  // then calls from other containers to the pod IP. Loopback calls are left alone: that is how the agent
  // reaches the app.
  add(OUTPUT_CHAIN, [
    [
      '-m',
      'owner',
      '--uid-owner',
      String(config.agentUid),
      ...comment(`never capture connections of the agent (uid ${config.agentUid})`),
      '-j',
      'RETURN',
    ],
  ]);
  const inPod = ['!', '-d', loopback, '-o', 'lo'];
  if (config.appPorts === 'all') {
    add(OUTPUT_CHAIN, portMatches(config.excludePorts, excluded, ['-j', 'RETURN']));
    add(OUTPUT_CHAIN, [
      [
        ...inPod,
        '-p',
        'tcp',
        ...comment('capture in-pod calls to the pod IP on every TCP port'),
        ...toRedirect,
      ],
    ]);
  } else {
    add(
      OUTPUT_CHAIN,
      portMatches(
        config.appPorts,
        (ports) => `capture in-pod calls to the pod IP on app ${ports}`,
        toRedirect,
      ).map((spec) => [...inPod, ...spec]),
    );
  }

  add(REDIRECT_CHAIN, [
    [
      '-p',
      'tcp',
      ...comment(`hand the connection to the tp agent on port ${config.agentPort}`),
      '-j',
      'REDIRECT',
      '--to-ports',
      String(config.agentPort),
    ],
  ]);

  const jumps: Rule[] = [
    { chain: 'PREROUTING', spec: ['-p', 'tcp', ...comment('inbound capture'), '-j', INBOUND_CHAIN] },
    { chain: 'OUTPUT', spec: ['-p', 'tcp', ...comment('in-pod capture'), '-j', OUTPUT_CHAIN] },
  ];
  return { family, rules, jumps };
}

/** An argument as iptables-save prints it: quoted when it holds a space. */
function quote(arg: string): string {
  if (arg !== '' && !/[\s"'\\]/.test(arg)) return arg;
  return `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** `-A CHAIN spec…`, exactly as iptables-save prints the rule (without counters). */
export function ruleLine(rule: Rule, command = '-A'): string {
  return [command, rule.chain, ...rule.spec.map(quote)].join(' ');
}

export function describeConfig(config: CaptureConfig, family: Family): string {
  const ports =
    config.appPorts === 'all'
      ? `every TCP port${config.excludePorts.length ? ` except ${config.excludePorts.join(',')}` : ''}`
      : `app ports ${config.appPorts.join(',')}`;
  return `IPv${family} capture of ${ports} to agent port ${config.agentPort}, agent uid ${config.agentUid}`;
}

export interface ApplyPlan {
  /** Jumps that `-C` found missing: only these are appended, so a second apply changes nothing. */
  missingJumps: Rule[];
  /** Lines from iptables-save (without counters) of jumps into tp's chains that are not the rendered ones. */
  staleJumpLines: string[];
}

/**
 * The restore input (for `iptables-restore --noflush`) that installs a rule set in one transaction.
 * `:CHAIN - [0:0]` creates each chain or flushes it, so re-applying rewrites tp's chains in place.
 */
export function renderApplyTransaction(config: CaptureConfig, ruleSet: RuleSet, plan: ApplyPlan): string {
  const lines = [`# ${COMMENT_TAG} tp-init: ${describeConfig(config, ruleSet.family)}`, '*nat'];
  for (const chain of TP_CHAINS) lines.push(`:${chain} - [0:0]`);
  for (const rule of ruleSet.rules) lines.push(ruleLine(rule));
  for (const stale of plan.staleJumpLines) lines.push(stale.replace(/^-A /, '-D '));
  for (const jump of plan.missingJumps) lines.push(ruleLine(jump));
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** What --dry-run prints: the transaction of a first apply (every jump missing). */
export function renderDryRun(config: CaptureConfig, ruleSet: RuleSet): string {
  return renderApplyTransaction(config, ruleSet, { missingJumps: ruleSet.jumps, staleJumpLines: [] });
}
