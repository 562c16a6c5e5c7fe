// tp-lab: a real Kubernetes control plane and one node on this machine, inside network namespaces,
// without Docker. See lab/README.md and docs/lab.md.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { Command, Option } from 'commander';
import { createLogger, parseLevel, setLevel } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import { cachedBinDir, ensureBinaries } from './binaries.js';
import { labDown } from './down.js';
import { labPaths } from './paths.js';
import { parseRelayEndpoint, startRelay } from './relay.js';
import { labRestart, RESTARTABLE } from './restart.js';
import { labStatus, renderStatus } from './status.js';
import { NODE_NETNS, WORKSTATION_NETNS } from './topology.js';
import { labUp } from './up.js';
import { checkHostResolvConf, ensureWorkstationResolvConf, labExecArgv } from './workstation.js';

const log = createLogger('tp-lab');
const progress = (line: string) => process.stderr.write(`${line}\n`);

const program = new Command('tp-lab')
  .description('A real Kubernetes cluster on one machine, in network namespaces, without Docker')
  .version(VERSION)
  .showHelpAfterError()
  // `tp-lab exec kubectl get pods -A`: options after the command belong to the command.
  .enablePositionalOptions();

program
  .command('up')
  .description(
    'build the binaries if needed, start the lab and wait until it is ready; prints the kubeconfig path',
  )
  .option('--keep-on-failure', 'leave a lab that failed to come up as it is, for debugging')
  .action(async (opts: { keepOnFailure?: boolean }) => {
    const r = await labUp({ progress, keepOnFailure: opts.keepOnFailure });
    if (!r.alreadyRunning)
      progress(`tp-lab: up in ${r.seconds.toFixed(1)}s; run \`eval "$(tp-lab env)"\` to use it`);
    process.stdout.write(`${r.kubeconfig}\n`);
  });

program
  .command('down')
  .description("stop every lab process and remove the lab's namespaces, interfaces and rules")
  .option('--purge', 'also remove the state directory (CA, kubeconfigs, logs)')
  .action(async (opts: { purge?: boolean }) => {
    const r = await labDown({ progress, purge: opts.purge });
    if (r.stopped.length === 0 && r.namespacesRemoved.length === 0)
      progress('tp-lab: the lab was not running');
    else progress('tp-lab: down');
  });

program
  .command('restart')
  .description(
    'stop one part of the running lab and start it again, waiting until the whole lab is ready (for fault tests)',
  )
  .argument('<component>', `one of ${RESTARTABLE.join(', ')} (node: the kubelet and containerd)`)
  .addHelpText('after', '\nExample:\n  tp-lab restart kube-apiserver')
  .action(async (component: string) => {
    const r = await labRestart(component, progress);
    progress(`tp-lab: restarted ${component} in ${r.seconds.toFixed(1)}s; the lab is ready`);
  });

program
  .command('status')
  .description('show what runs and what is ready')
  .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
  .action(async (opts: { output: 'text' | 'json' }) => {
    const s = await labStatus();
    process.stdout.write(opts.output === 'json' ? `${JSON.stringify(s, null, 2)}\n` : renderStatus(s));
    if (s.state !== 'running') process.exitCode = 3;
  });

program
  .command('env')
  .description('print the shell exports for the lab: eval "$(tp-lab env)"')
  .option('--workstation', "the workstation namespace's kubeconfig (for shells inside tplab-ws)")
  .action((opts: { workstation?: boolean }) => {
    const p = labPaths();
    const kubeconfig = opts.workstation ? p.kubeconfigWorkstation : p.kubeconfig;
    if (!fs.existsSync(kubeconfig)) progress('tp-lab: warning: the lab has not been started yet (tp-lab up)');
    process.stdout.write(`export KUBECONFIG=${shellQuote(kubeconfig)}\n`);
    process.stdout.write(`export PATH=${shellQuote(cachedBinDir())}:"$PATH"\n`);
  });

program
  .command('exec')
  .description(
    "run a command in the workstation namespace (tplab-ws, with the lab's own /etc/resolv.conf) with the lab kubeconfig and PATH",
  )
  .option('--node', 'run it in the node namespace (tplab-node) instead, e.g. to read iptables-save')
  .argument('<command...>', 'the command and its arguments (after --)')
  .passThroughOptions()
  .action(async (argv: string[], opts: { node?: boolean }) => {
    process.exitCode = await execInLab(argv, opts.node ? NODE_NETNS : WORKSTATION_NETNS);
  });

program
  .command('build')
  .description("build (or find cached) the lab's Kubernetes binaries; prints their directory")
  .action(async () => {
    process.stdout.write(`${await ensureBinaries(progress)}\n`);
  });

program
  .command('relay', { hidden: true })
  .description('internal: the API relay between a TCP port and a unix socket')
  .requiredOption('--listen <endpoint>', 'tcp:HOST:PORT or unix:/path')
  .requiredOption('--connect <endpoint>', 'tcp:HOST:PORT or unix:/path')
  .action(async (opts: { listen: string; connect: string }) => {
    const server = await startRelay(
      parseRelayEndpoint(opts.listen, '--listen'),
      parseRelayEndpoint(opts.connect, '--connect'),
    );
    const stop = () => server.close(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs argv inside a lab namespace, forwarding signals; resolves to its exit code. In the workstation
 * namespace the command also gets a private mount namespace with the lab's resolv.conf (lab/workstation.ts).
 */
function execInLab(argv: string[], netns: string): Promise<number> {
  const p = labPaths();
  if (!fs.existsSync(`/run/netns/${netns}`)) {
    throw new UsageError(`the lab is not running (no network namespace ${netns}): run \`tp-lab up\` first`);
  }
  const workstation = netns === WORKSTATION_NETNS;
  if (workstation) checkHostResolvConf();
  const env = {
    ...process.env,
    KUBECONFIG: workstation ? p.kubeconfigWorkstation : p.kubeconfig,
    PATH: `${cachedBinDir()}:${process.env.PATH ?? ''}`,
  };
  const full = labExecArgv(netns, argv, workstation ? ensureWorkstationResolvConf(p) : undefined);
  return new Promise((resolve, reject) => {
    const child = spawn(full[0]!, full.slice(1), { stdio: 'inherit', env });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, forward);
    child.on('error', reject);
    child.on('close', (code, signal) => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0)));
  });
}

async function main(): Promise<void> {
  setLevel(parseLevel(process.env.TP_LOG_LEVEL));
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`tp-lab: ${err.message}\n`);
    } else {
      process.stderr.write(`tp-lab: ${(err as Error).message}\n`);
      log.debug('stack', { stack: (err as Error).stack });
    }
    process.exit(1);
  }
}

await main();
