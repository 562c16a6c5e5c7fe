// The eBPF capture mechanism on its own command line: what `tp-init … --mechanism ebpf` runs, usable by
// hand and by the tests. Usage: node dist/bpf/main.js apply --ports 8080,9090 | status | cleanup | probe
import { Command, Option } from 'commander';
import { parseLevel, setLevel } from '../logging/logger.js';
import { parsePortList, UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import { BpfError } from './libbpf.js';
import { apply, cleanup, formatStatus, probeSupport, status, statusJson } from './mechanism.js';

interface NamespaceFlags {
  netns?: string;
  pinRoot?: string;
}

function withNamespaceFlags(command: Command): Command {
  return command
    .option('--netns <path>', 'the network namespace (default: this process’s own, /proc/self/ns/net)')
    .option('--pin-root <dir>', 'the bpffs directory of tp’s pins (default: /sys/fs/bpf/tp)');
}

const selector = (o: NamespaceFlags) => ({
  ...(o.netns ? { netnsPath: o.netns } : {}),
  ...(o.pinRoot ? { pinRoot: o.pinRoot } : {}),
});

function parseUid(value: string): number {
  if (!/^\d+$/.test(value.trim())) {
    throw new UsageError(`invalid --agent-uid "${value}": expected a numeric UID, e.g. 7777`);
  }
  return Number(value);
}

/** Runs a subcommand: expected failures print their message (no stack) and exit 1. */
function action<T extends unknown[]>(fn: (...args: T) => number): (...args: T) => void {
  return (...args: T) => {
    try {
      process.exitCode = fn(...args);
    } catch (err) {
      if (err instanceof UsageError || err instanceof BpfError) {
        process.stderr.write(`tp-bpf: ${err.message}\n`);
      } else process.stderr.write(`tp-bpf: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  };
}

const program = new Command('tp-bpf')
  .description('tp eBPF capture: steer captured ports to the agent only while it intercepts them')
  .version(VERSION)
  .option('--log-level <level>', 'error, warn, info, debug or trace (or TP_LOG_LEVEL)')
  .hook('preAction', (cmd) => {
    setLevel(parseLevel(cmd.opts().logLevel ?? process.env.TP_LOG_LEVEL));
  });

withNamespaceFlags(
  program.command('apply').description('attach the sk_lookup program and capture the ports (idempotent)'),
)
  .requiredOption('--ports <ports>', 'app ports to capture, comma-separated, e.g. 8080,9090')
  .option('--agent-uid <uid>', 'the UID of a non-root agent: it gets the maps it updates')
  .action(
    action((opts: NamespaceFlags & { ports: string; agentUid?: string }) => {
      const r = apply({
        ports: parsePortList(opts.ports, 'app port'),
        ...selector(opts),
        ...(opts.agentUid !== undefined ? { agentUid: parseUid(opts.agentUid) } : {}),
      });
      if (!r.changed) process.stdout.write(`eBPF capture already in place in ${r.pinDir}: nothing changed\n`);
      else process.stdout.write(`${r.actions.map((a) => `eBPF capture: ${a}`).join('\n')}\n`);
      return 0;
    }),
  );

withNamespaceFlags(
  program.command('status').description('show the program, link, maps and per-port counters'),
)
  .addOption(new Option('-o, --output <format>', 'text or json').choices(['text', 'json']).default('text'))
  .action(
    action((opts: NamespaceFlags & { output: string }) => {
      const s = status(selector(opts));
      process.stdout.write(opts.output === 'json' ? statusJson(s) : `${formatStatus(s)}\n`);
      // 0 only when attached and intact, like `tp-init status` for iptables.
      return s.attached && s.problems.length === 0 ? 0 : 1;
    }),
  );

withNamespaceFlags(program.command('cleanup').description('detach the program and remove every pin')).action(
  action((opts: NamespaceFlags) => {
    const r = cleanup(selector(opts));
    process.stdout.write(
      r.removed.length === 0
        ? `eBPF capture: nothing to remove in ${r.pinDir}\n`
        : `eBPF capture: removed ${r.removed.join(', ')}\n`,
    );
    return 0;
  }),
);

program
  .command('probe')
  .description('can eBPF capture run here? exit 0 if yes; prints the reason either way')
  .option('--pin-root <dir>', 'the bpffs directory of tp’s pins (default: /sys/fs/bpf/tp)')
  .action(
    action((opts: { pinRoot?: string }) => {
      const r = probeSupport(opts.pinRoot ? { pinRoot: opts.pinRoot } : {});
      process.stdout.write(`${r.supported ? 'supported' : 'not supported'}: ${r.reason}\n`);
      return r.supported ? 0 : 1;
    }),
  );

program.parse();
