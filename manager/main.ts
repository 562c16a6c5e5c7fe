// tp-manager: the traffic manager. `--standalone` runs it without Kubernetes: workloads are the ones
// whose agents arrive on their own. Without it, the manager runs against Kubernetes (the Helm chart's
// Deployment: in-cluster credentials, configuration from the chart's env; or --kubeconfig for
// development), and `tp-manager uninstall-agents` is the chart's pre-delete hook.
import { Command, InvalidArgumentError } from 'commander';
import { createLogger, parseLevel, setLevel } from '../logging/logger.js';
import { parseDuration, parseHostPort, UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import { CredentialAuthority } from './credentials.js';
import { startMetricsServer } from './metrics.js';
import { DEFAULT_DRAIN_MS, startManager } from './server.js';
import { loadSigningKey } from './signing-key.js';

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
  .option(
    '--listen <HOST:PORT>',
    'the address to serve the Manager API on (Kubernetes mode: 0.0.0.0:$TP_GRPC_PORT)',
    flag(parseHostPort, '--listen'),
  )
  .option(
    '--metrics-listen <HOST:PORT>',
    'serve Prometheus metrics at http://HOST:PORT/metrics (Kubernetes mode: 0.0.0.0:$TP_METRICS_PORT when set)',
    flag(parseHostPort, '--metrics-listen'),
  )
  .option('--kubeconfig <file>', 'Kubernetes mode outside a pod: the cluster credentials to use')
  .option('--context <name>', 'Kubernetes mode: the kubeconfig context to use')
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
  .option(
    '--intercept-grace <duration>',
    "hold a lost client's intercepts this long for it to take back",
    flag(parseDuration, '--intercept-grace'),
    120_000,
  )
  .option('--log-level <level>', 'error, warn, info, debug or trace', process.env.TP_LOG_LEVEL ?? 'info')
  .showHelpAfterError(false)
  .configureOutput({ outputError: (s, write) => write(s) });

program
  .command('uninstall-agents')
  .description("remove the agent from every workload in the managed namespaces (the chart's pre-delete hook)")
  .action(async () => {
    const o = program.opts<{ kubeconfig?: string; context?: string; logLevel: string }>();
    setLevel(parseLevel(o.logLevel));
    const { runUninstallAgents } = await import('./kubernetes/in-cluster.js');
    process.exit(await runUninstallAgents(o, log));
  });

async function serve(): Promise<void> {
  const opts = program.opts<{
    standalone?: boolean;
    listen?: { host: string; port: number };
    metricsListen?: { host: string; port: number };
    kubeconfig?: string;
    context?: string;
    clientTtl: number;
    agentTtl: number;
    interceptGrace: number;
    logLevel: string;
  }>();
  setLevel(parseLevel(opts.logLevel));
  if (opts.standalone && !opts.listen)
    throw new UsageError('--standalone needs --listen HOST:PORT, e.g. --listen 127.0.0.1:8081');
  // Kubernetes mode: the chart's env configures sessions and the port unless a flag says otherwise.
  // Loaded only in Kubernetes mode: the Kubernetes client doubles the manager's start time and memory.
  // One signing key for the identity tokens the session API issues, the sessions the gRPC API opens and
  // the resume tokens of its clients: the chart's Secret, so that a restarted manager shares it.
  const signingKey = loadSigningKey(process.env.TP_SIGNING_KEY_FILE || undefined);
  log.info('signing key', { source: signingKey.source });
  const credentials = new CredentialAuthority(signingKey.key);
  const kube = opts.standalone
    ? undefined
    : await (await import('./kubernetes/in-cluster.js')).startInClusterManager(opts, log, credentials);
  if (!kube && !['127.0.0.1', '::1', 'localhost'].includes(opts.listen!.host))
    log.warn(
      'standalone mode authenticates no one (there is no Kubernetes to ask): anyone who reaches this address can use the manager',
      { listen: `${opts.listen!.host}:${opts.listen!.port}` },
    );
  const explicit = (name: string) => program.getOptionValueSource(name) === 'cli';
  const manager = await startManager({
    host: opts.listen?.host ?? '0.0.0.0',
    port: opts.listen?.port ?? kube!.config.grpcPort,
    clientTtlMs: kube && !explicit('clientTtl') ? kube.config.clientSessionTtlMs : opts.clientTtl,
    agentTtlMs: kube && !explicit('agentTtl') ? kube.config.agentSessionTtlMs : opts.agentTtl,
    interceptGraceMs:
      kube && !explicit('interceptGrace') ? kube.config.interceptGraceMs : opts.interceptGrace,
    cluster: kube?.integration,
    credentials,
  });
  const metricsAt =
    opts.metricsListen ??
    (kube?.config.metricsPort ? { host: '0.0.0.0', port: kube.config.metricsPort } : undefined);
  const metrics = metricsAt
    ? await startMetricsServer(manager.core, metricsAt.host, metricsAt.port, log.child('metrics'))
    : undefined;
  let stopping = false;
  // A restart (SIGTERM: a rollout, a deleted pod) lets the flows in progress finish first, for at most the
  // chart's timeouts.drain (docs/faults.md); a second signal does not hurry it.
  const drainMs = kube?.config.drainMs ?? DEFAULT_DRAIN_MS;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    void Promise.all([manager.stop(drainMs), kube?.integration.stop(), metrics?.close()]).then(() =>
      process.exit(0),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

program.action(serve);
try {
  await program.parseAsync();
} catch (e) {
  process.stderr.write(`tp-manager: ${(e as Error).message}\n`);
  process.exit(1);
}
