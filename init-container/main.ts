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
import { applyCapture, type CaptureEnv, captureStatus, cleanupCapture, dryRunCapture } from './capture.js';
import { ExecRunner } from './command-runner.js';
import {
  type CaptureFlags,
  captureConfigFromFlags,
  DEFAULT_AGENT_PORT,
  DEFAULT_AGENT_UID,
} from './config.js';
import { formatApplied, formatCleaned, formatStatus } from './report.js';

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

withMechanism(
  withCaptureFlags(
    program
      .command('status')
      .description('check the rules against what apply installs; exit 0 only when all is in place'),
  ),
)
  .addOption(new Option('-o, --output <format>', 'text or json').choices(['text', 'json']).default('text'))
  .action(
    action(async (opts: CaptureFlags & { output: string; mechanism: Mechanism }) => {
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
