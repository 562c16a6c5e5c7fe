// tp-init: installs, checks and removes the capture rules in a pod's network namespace.
// Runs as the init container of an intercepted pod (needs NET_ADMIN); `status` and `cleanup` also run from
// `kubectl exec` or a debug container in the same pod.
import * as os from 'node:os';
import { Command, Option } from 'commander';
import { BpfError } from '../bpf/libbpf.js';
import * as ebpf from '../bpf/mechanism.js';
import { createLogger, parseLevel, setLevel } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import {
  applyCapture,
  type CaptureEnv,
  type CaptureStatus,
  captureStatus,
  cleanupCapture,
  discoverCaptureStatus,
  dryRunCapture,
} from './capture.js';
import { ExecRunner } from './command-runner.js';
import {
  type CaptureFlags,
  captureConfigFromFlags,
  DEFAULT_AGENT_PORT,
  DEFAULT_AGENT_UID,
} from './config.js';
import { formatApplied, formatCleaned, formatDiscoveredStatus, formatStatus } from './report.js';

const log = createLogger('tp-init');

function env(): CaptureEnv {
  return { runner: new ExecRunner(), log, interfaces: os.networkInterfaces() };
}

function withCaptureFlags(command: Command): Command {
  return command
    .option(
      '--ports <ports>',
      'app ports to capture, comma-separated (e.g. 8080,9090), or "*" for every TCP port',
    )
    .option('--exclude-ports <ports>', 'ports never captured (with --ports "*")')
    .option('--agent-port <port>', 'the port the tp agent listens on', String(DEFAULT_AGENT_PORT))
    .option(
      '--agent-uid <uid>',
      "the agent's UID: its own connections are never captured",
      String(DEFAULT_AGENT_UID),
    )
    .addOption(
      new Option(
        '--ipv6 <mode>',
        'capture IPv6 too: auto = when the pod has a global IPv6 address and ip6tables nat works',
      )
        .choices(['auto', 'on', 'off'])
        .default('auto'),
    )
    .addOption(
      new Option('--backend <backend>', 'iptables backend: auto = the one already holding rules, else nft')
        .choices(['auto', 'nft', 'legacy'])
        .default('auto'),
    );
}

type Mechanism = 'iptables' | 'ebpf';

function withMechanism(command: Command): Command {
  return command.addOption(
    new Option(
      '--mechanism <mechanism>',
      'iptables (REDIRECT to the agent) or ebpf (sk_lookup steering; falls back to iptables, saying why, where the kernel or the capabilities do not allow it)',
    )
      .choices(['iptables', 'ebpf'])
      .default('iptables'),
  );
}

/** Runs a subcommand: expected failures print their message (no stack) and exit 1. */
function action<T extends unknown[]>(fn: (...args: T) => Promise<number>): (...args: T) => Promise<void> {
  return async (...args: T) => {
    try {
      process.exitCode = await fn(...args);
    } catch (err) {
      if (err instanceof UsageError || err instanceof BpfError)
        process.stderr.write(`tp-init: ${err.message}\n`);
      else process.stderr.write(`tp-init: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  };
}

const program = new Command('tp-init')
  .description("tp capture rules: send a pod's inbound app connections to the tp agent")
  .version(VERSION)
  .option('--log-level <level>', 'error, warn, info, debug or trace (or TP_LOG_LEVEL)')
  .hook('preAction', (cmd) => {
    setLevel(parseLevel(cmd.opts().logLevel ?? process.env.TP_LOG_LEVEL));
  });

withMechanism(
  withCaptureFlags(program.command('apply').description('install the capture rules (idempotent)')),
)
  .option('--dry-run', 'print the iptables-restore input and touch nothing')
  .action(
    action(async (opts: CaptureFlags & { dryRun?: boolean; mechanism: Mechanism }) => {
      const config = captureConfigFromFlags(opts);
      if (opts.mechanism === 'ebpf' && !opts.dryRun) {
        if (config.appPorts === 'all')
          throw new UsageError('--ports "*" needs --mechanism iptables: eBPF capture takes a list of ports');
        const support = ebpf.probeSupport({ agentUid: config.agentUid });
        if (support.supported) {
          const r = ebpf.apply({ ports: config.appPorts, agentUid: config.agentUid });
          process.stdout.write(
            r.changed
              ? r.actions.map((a) => `eBPF capture: ${a}\n`).join('')
              : `eBPF capture already in place in ${r.pinDir}: nothing changed\n`,
          );
          return 0;
        }
        log.warn(`eBPF capture is not available: ${support.reason}; falling back to iptables`);
      }
      if (opts.dryRun) {
        process.stdout.write(dryRunCapture(config, os.networkInterfaces()));
        return 0;
      }
      process.stdout.write(formatApplied(await applyCapture(env(), config)));
      return 0;
    }),
  );

/** Exit code of `status` when it cannot read the rules at all (drift is 1). */
const CANNOT_READ = 2;

/** Why this container cannot read the rules, and how an admin gets a live status (docs/capture.md). */
function cannotReadMessage(reason: string): string {
  const pod = process.env.TP_POD_NAME ?? 'POD';
  const ns = process.env.TP_NAMESPACE ?? 'NAMESPACE';
  return (
    `cannot read the capture rules from this container: ${reason}. Reading nftables/iptables (and the ` +
    'pinned eBPF objects) needs root with NET_ADMIN, which the tp-agent container does not have. For a live ' +
    `status run it from a debug container that has it: kubectl debug -n ${ns} ${pod} -it ` +
    `--profile=netadmin --custom=<(echo '{"securityContext":{"runAsUser":0}}') --image=<the tp-agent image> ` +
    `-- tp-init status; the rules as tp-init installed them: kubectl logs -n ${ns} ${pod} -c tp-init`
  );
}

type EbpfFound = { status: ebpf.CaptureStatus } | { error: string } | undefined;

/** The eBPF capture of this namespace when anything of it is pinned; undefined when nothing is. */
function discoverEbpf(): EbpfFound {
  try {
    const s = ebpf.status();
    return Object.values(s.pins).some(Boolean) ? { status: s } : undefined;
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** `tp-init status` without flags: whatever tp installed here, iptables (both families, both backends) and eBPF. */
async function discoveredStatus(output: string): Promise<number> {
  let iptables: CaptureStatus | { error: string };
  try {
    iptables = await discoverCaptureStatus(env());
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    iptables = { error: err.message };
  }
  const bpf = discoverEbpf();
  const iptablesError = 'error' in iptables ? iptables.error : undefined;
  if (iptablesError && /NET_ADMIN|not permitted/.test(iptablesError) && (!bpf || 'error' in bpf)) {
    process.stderr.write(
      `tp-init: ${cannotReadMessage(iptablesError.replace(/: tp-init needs the NET_ADMIN.*$/, ''))}\n`,
    );
    return CANNOT_READ;
  }
  const found = ('families' in iptables && iptables.families.length > 0) || (bpf && 'status' in bpf);
  const bpfOk = bpf && 'status' in bpf ? bpf.status.attached && bpf.status.problems.length === 0 : true;
  const iptablesOk = 'families' in iptables ? iptables.inPlace || iptables.families.length === 0 : false;
  const inPlace = Boolean(found) && iptablesOk && bpfOk;
  if (output === 'json') {
    const ebpfJson = bpf && 'status' in bpf ? JSON.parse(ebpf.statusJson(bpf.status)) : (bpf ?? null);
    process.stdout.write(`${JSON.stringify({ inPlace, iptables, ebpf: ebpfJson }, null, 2)}\n`);
  } else {
    const out: string[] = [];
    if ('error' in iptables) out.push(`iptables: cannot read: ${iptables.error}`);
    else if (iptables.families.length > 0 || !bpf) out.push(formatDiscoveredStatus(iptables).trimEnd());
    if (bpf) out.push('error' in bpf ? `eBPF: cannot read: ${bpf.error}` : ebpf.formatStatus(bpf.status));
    process.stdout.write(`${out.join('\n')}\n`);
  }
  return inPlace ? 0 : 1;
}

withMechanism(
  withCaptureFlags(
    program
      .command('status')
      .description(
        "what tp installed in this pod, rule by rule with its counters; exit 0 when in place, 1 on drift or nothing installed, 2 when this container cannot read it. Without --ports: found from tp's comments (both families and backends, and eBPF)",
      ),
  ),
)
  .addOption(new Option('-o, --output <format>', 'text or json').choices(['text', 'json']).default('text'))
  .addHelpText(
    'after',
    '\nExamples:\n  tp-init status                      # whatever tp installed here\n  tp-init status -o json\n  tp-init status --ports 8080 --agent-port 15001   # against these flags',
  )
  .action(
    action(async (opts: CaptureFlags & { output: string; mechanism: Mechanism }, cmd: Command) => {
      if (opts.ports === undefined && cmd.getOptionValueSource('mechanism') !== 'cli')
        return discoveredStatus(opts.output);
      if (opts.mechanism === 'ebpf') {
        const s = ebpf.status();
        process.stdout.write(opts.output === 'json' ? ebpf.statusJson(s) : `${ebpf.formatStatus(s)}\n`);
        return s.attached && s.problems.length === 0 ? 0 : 1;
      }
      const status = await captureStatus(env(), captureConfigFromFlags(opts));
      process.stdout.write(
        opts.output === 'json' ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status),
      );
      return status.inPlace ? 0 : 1;
    }),
  );

withMechanism(
  program
    .command('cleanup')
    .description('remove every tp chain and the jumps into them, in one transaction per family'),
).action(
  action(async (opts: { mechanism: Mechanism }) => {
    if (opts.mechanism === 'ebpf') {
      // Also what an apply that fell back to iptables installed.
      const r = ebpf.cleanup();
      process.stdout.write(
        r.removed.length
          ? `eBPF capture: removed ${r.removed.join(', ')}\n`
          : `eBPF capture: nothing to remove in ${r.pinDir}\n`,
      );
    }
    process.stdout.write(formatCleaned(await cleanupCapture(env())));
    return 0;
  }),
);

await program.parseAsync();
