// tp-manager: the traffic manager. `--standalone` runs it without Kubernetes: workloads are the ones
// whose agents arrive on their own.
import { Command, InvalidArgumentError } from 'commander';
import { createLogger, parseLevel, setLevel } from '../logging/logger.js';
import { parseDuration, parseHostPort, UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import { startManager } from './server.js';

const log = createLogger('manager');

function flag<T>(parse: (v: string, what: string) => T, what: string) {
  return (v: string): T => {
    try {
      return parse(v, what);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

const program = new Command('tp-manager')
  .description('the tp traffic manager')
  .version(VERSION)
  .option('--standalone', 'run without Kubernetes: workloads are known from the agents that arrive')
  .requiredOption(
    '--listen <HOST:PORT>',
    'the address to serve the Manager API on',
    flag(parseHostPort, '--listen'),
  )
  .option(
    '--client-ttl <duration>',
    'drop a client silent for this long',
    flag(parseDuration, '--client-ttl'),
    15_000,
  )
  .option(
    '--agent-ttl <duration>',
    'drop an agent silent for this long',
    flag(parseDuration, '--agent-ttl'),
    15_000,
  )
  .option('--log-level <level>', 'error, warn, info, debug or trace', process.env.TP_LOG_LEVEL ?? 'info')
  .showHelpAfterError(false)
  .configureOutput({ outputError: (s, write) => write(s) });

program.parse();
const opts = program.opts<{
  standalone?: boolean;
  listen: { host: string; port: number };
  clientTtl: number;
  agentTtl: number;
  logLevel: string;
}>();

try {
  setLevel(parseLevel(opts.logLevel));
  if (!opts.standalone)
    throw new UsageError(
      'only standalone mode exists so far: run tp-manager --standalone --listen HOST:PORT (the Kubernetes mode comes with the Helm chart)',
    );
  const manager = await startManager({
    host: opts.listen.host,
    port: opts.listen.port,
    clientTtlMs: opts.clientTtl,
    agentTtlMs: opts.agentTtl,
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    void manager.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
} catch (e) {
  process.stderr.write(`tp-manager: ${(e as Error).message}\n`);
  process.exit(1);
}
