// tp-kind: a kind cluster on this machine from images built here (kind/README.md): up, down, exec.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { Command } from 'commander';
import { defaultArchivePath, TP_REPOSITORY } from '../image/tp-image.js';
import { cachedBinDir } from '../lab/binaries.js';
import { checkHostResolvConf } from '../lab/workstation.js';
import { createLogger, parseLevel, setLevel } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import { kindDown, kindUp, WORKSTATION_NETNS, workstationArgv } from './cluster.js';
import { kindPaths } from './paths.js';

const log = createLogger('tp-kind');
const progress = (line: string) => process.stderr.write(`${line}\n`);

const program = new Command('tp-kind')
  .description('A kind cluster from images built on this machine, and a workstation namespace beside it')
  .version(VERSION)
  .showHelpAfterError()
  .enablePositionalOptions();

program
  .command('up')
  .description(
    'build what is missing, start Docker if none runs, create the cluster; prints the kubeconfig path',
  )
  .option(
    '--tp-image <archive>',
    "tp's image archive (npm run image)",
    defaultArchivePath(`${TP_REPOSITORY}:${VERSION}`),
  )
  .action(async (opts: { tpImage: string }) => {
    const r = await kindUp(kindPaths(), opts.tpImage, progress);
    progress(`tp-kind: up in ${r.seconds.toFixed(0)}s`);
    process.stdout.write(`${r.kubeconfig}\n`);
  });

program
  .command('down')
  .description(
    'delete the cluster and the workstation; stop Docker if tp-kind started it, and check it left nothing',
  )
  .action(async () => {
    const left = await kindDown(kindPaths(), progress);
    if (left.length > 0)
      throw new UsageError(`Docker left this behind (remove it by hand):\n  ${left.join('\n  ')}`);
    progress('tp-kind: down; nothing of Docker is left running or configured');
  });

program
  .command('exec')
  .description('run a command on the workstation (its network namespace, resolv.conf and kubeconfig)')
  .argument('<command...>', 'the command and its arguments (after --)')
  .passThroughOptions()
  .action(async (argv: string[]) => {
    if (!fs.existsSync(`/run/netns/${WORKSTATION_NETNS}`))
      throw new UsageError('the kind cluster is not up (no workstation namespace): run `tp-kind up` first');
    checkHostResolvConf();
    const full = workstationArgv(kindPaths(), cachedBinDir(), argv);
    const child = spawn(full[0]!, full.slice(1), { stdio: 'inherit' });
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
    process.exitCode = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  });

program
  .command('env')
  .description('print the shell lines that point kubectl at the cluster from this host')
  .action(() => {
    process.stdout.write(
      `export KUBECONFIG=${kindPaths().kubeconfig}\nexport PATH=${cachedBinDir()}:$PATH\n`,
    );
  });

setLevel(parseLevel(process.env.TP_LOG_LEVEL));
program.parseAsync().catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`tp-kind: ${err.message}\n`);
  } else {
    log.error(err instanceof Error ? err.message : String(err));
    if (process.env.TP_LOG_LEVEL === 'debug' && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  }
  process.exit(1);
});
