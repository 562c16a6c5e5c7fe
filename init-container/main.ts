// tp-init: installs, checks and removes the capture rules in a pod's network namespace.
// Runs as the init container of an intercepted pod (needs NET_ADMIN); `status` and `cleanup` also run from
// `kubectl exec` or a debug container in the same pod.
import * as os from 'node:os';
import { Command, Option } from 'commander';
import { checkPinRoot, ebpfMechanism } from '../bpf/capture-mechanism.js';
import { BpfError } from '../bpf/libbpf.js';
import { createLogger, parseLevel, setLevel } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import type { CaptureEnv } from './capture.js';
import { ExecRunner } from './command-runner.js';
import {
  type CaptureFlags,
  captureConfigFromFlags,
  DEFAULT_AGENT_PORT,
  DEFAULT_AGENT_UID,
  parseAgentUid,
} from './config.js';
import { iptablesMechanism } from './iptables.js';
import {
  type CaptureMechanism,
  chooseMechanism,
  cleanupOrder,
  combineStatus,
  type Found,
  LABEL,
  MECHANISMS,
  type MechanismName,
} from './mechanism.js';

const log = createLogger('tp-init');

function env(): CaptureEnv {
  return { runner: new ExecRunner(), log, interfaces: os.networkInterfaces() };
}

interface MechanismFlags {
  mechanism: MechanismName;
  pinRoot?: string;
}

/** Each capture mechanism, behind the one interface (mechanism.ts). */
function mechanisms(opts: { pinRoot?: string }): Record<MechanismName, CaptureMechanism> {
  return {
    iptables: iptablesMechanism(env()),
    ebpf: ebpfMechanism(opts.pinRoot === undefined ? {} : { pinRoot: checkPinRoot(opts.pinRoot) }),
  };
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

function withMechanism(command: Command): Command {
  return command
    .addOption(
      new Option(
        '--mechanism <mechanism>',
        'iptables (REDIRECT to the agent) or ebpf (sk_lookup steering; falls back to iptables, saying why, where the kernel or the capabilities do not allow it)',
      )
        .choices(MECHANISMS)
        .default('iptables'),
    )
    .option('--pin-root <dir>', "eBPF: the bpffs directory of tp's pins (default: /sys/fs/bpf/tp)");
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
  .option(
    '--dry-run',
    'print what apply would install (the iptables-restore input, or the eBPF pins and ports) and touch nothing',
  )
  .action(
    action(async (opts: CaptureFlags & MechanismFlags & { dryRun?: boolean }) => {
      const config = captureConfigFromFlags(opts);
      const all = mechanisms(opts);
      const requested = all[opts.mechanism];
      if (opts.dryRun) {
        process.stdout.write(requested.dryRun(config));
        return 0;
      }
      const choice = chooseMechanism(opts.mechanism, await requested.probeSupport?.(config));
      if (choice.fallback) log.warn(choice.fallback);
      process.stdout.write(await all[choice.use].apply(config));
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

/** `tp-init status` without flags: whatever tp installed here, by every mechanism. */
async function discoveredStatus(
  all: Record<MechanismName, CaptureMechanism>,
  output: string,
): Promise<number> {
  const found: Found[] = [];
  for (const name of MECHANISMS) {
    try {
      found.push({ name, status: await all[name].status() });
    } catch (err) {
      const unreadable = all[name].unreadable(err);
      if (!unreadable) throw err;
      found.push({ name, unreadable });
    }
  }
  const combined = combineStatus(found);
  if ('cannotRead' in combined) {
    process.stderr.write(`tp-init: ${cannotReadMessage(combined.cannotRead)}\n`);
    return CANNOT_READ;
  }
  process.stdout.write(output === 'json' ? `${JSON.stringify(combined.json, null, 2)}\n` : combined.text);
  return combined.inPlace ? 0 : 1;
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
    '\nExamples:\n  tp-init status                      # whatever tp installed here\n  tp-init status -o json\n  tp-init status --ports 8080 --agent-port 15001   # against these flags\n  tp-init status --mechanism ebpf     # only eBPF',
  )
  .action(
    action(async (opts: CaptureFlags & MechanismFlags & { output: string }, cmd: Command) => {
      const all = mechanisms(opts);
      if (opts.ports === undefined && cmd.getOptionValueSource('mechanism') !== 'cli')
        return discoveredStatus(all, opts.output);
      const config = opts.ports === undefined ? undefined : captureConfigFromFlags(opts);
      const status = await all[opts.mechanism].status(config);
      process.stdout.write(
        opts.output === 'json' ? `${JSON.stringify(status.json, null, 2)}\n` : status.text,
      );
      return status.inPlace ? 0 : 1;
    }),
  );

withMechanism(
  program
    .command('cleanup')
    .description(
      'remove what tp installed: every tp chain and the jumps into them, in one transaction per family; with --mechanism ebpf the eBPF pins first',
    ),
).action(
  action(async (opts: MechanismFlags) => {
    const all = mechanisms(opts);
    // eBPF also removes what an apply that fell back to iptables installed.
    for (const name of cleanupOrder(opts.mechanism)) process.stdout.write(await all[name].cleanup());
    return 0;
  }),
);

program
  .command('probe')
  .description(
    'can each capture mechanism run here (or the one --mechanism names)? one line each with the reason; exit 0 when all asked are supported',
  )
  .addOption(new Option('--mechanism <mechanism>', 'only this one').choices(MECHANISMS))
  .option('--pin-root <dir>', "eBPF: the bpffs directory of tp's pins (default: /sys/fs/bpf/tp)")
  .option(
    '--agent-uid <uid>',
    "the agent's UID, as apply gets it (eBPF hands it two maps: CAP_CHOWN)",
    String(DEFAULT_AGENT_UID),
  )
  .addOption(new Option('-o, --output <format>', 'text or json').choices(['text', 'json']).default('text'))
  .action(
    action(
      async (opts: { mechanism?: MechanismName; pinRoot?: string; agentUid: string; output: string }) => {
        const all = mechanisms(opts);
        const request = { appPorts: [], agentUid: parseAgentUid(opts.agentUid) };
        const reports: { mechanism: MechanismName; supported: boolean; reason: string }[] = [];
        for (const name of opts.mechanism ? [opts.mechanism] : MECHANISMS) {
          const r = (await all[name].probeSupport?.(request)) ?? {
            supported: true,
            reason: 'nothing to probe: apply names whatever is missing',
          };
          reports.push({ mechanism: name, ...r });
        }
        process.stdout.write(
          opts.output === 'json'
            ? `${JSON.stringify(reports, null, 2)}\n`
            : reports
                .map(
                  (r) =>
                    `${LABEL[r.mechanism]}: ${r.supported ? 'supported' : 'not supported'}: ${r.reason}\n`,
                )
                .join(''),
        );
        return reports.every((r) => r.supported) ? 0 : 1;
      },
    ),
  );

await program.parseAsync();
