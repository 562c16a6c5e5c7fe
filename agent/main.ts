// tp-agent: the traffic agent. Configured by environment (see config.ts and README.md); bundled into one
// file (dist/bundle/tp-agent.cjs), so it imports neither the manager nor the CLI.
import { decode } from '../agentconfig/env.js';
import { createLogger, setLevel } from '../logging/logger.js';
import { formatHostPort, UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import { appEnvironment } from './app-env.js';
import { listenersOf } from './config.js';
import { ConnectionCounters } from './connection-counters.js';
import { appContainers } from './containers.js';
import { startCounterReports } from './counter-report.js';
import { DirectServer } from './direct.js';
import { openSteering } from './ebpf-steering.js';
import { serveMount } from './file-server.js';
import { PortListener } from './listeners.js';
import { AgentManagerSession } from './manager-session.js';
import { ProbeServer } from './probe-server.js';

const log = createLogger('agent');

async function main(): Promise<void> {
  const config = decode(process.env);
  setLevel(config.logLevel);
  // Read once at start, so a bad TP_APP_ENV_FILE or TP_CONTAINERS fails the agent at once, not at the
  // first intercept.
  const containers = appContainers(
    config.containers,
    process.env,
    config.ports.map((p) => p.appPort),
    () => appEnvironment(config.appEnvFile, process.env),
  );
  const address = formatHostPort(config.managerAddress.host, config.managerAddress.port);
  // eBPF capture: only intercepted ports reach the agent, steered while their intercept is active. Where
  // tp-init fell back to iptables, connections arrive redirected as with TP_MECHANISM=iptables.
  let listeners: PortListener[] = [];
  const steering =
    config.mechanism === 'ebpf'
      ? await openSteering(
          config.ports.map((p) => p.appPort),
          (appPort) => listeners.find((l) => l.appPorts.includes(appPort))?.fd(),
          config.bpfPinRoot,
          log.child('ebpf'),
        )
      : undefined;
  // The direct service first: the arrival tells the manager its port (0: none). A port the agent cannot
  // take costs only the direct path; connections then go through the manager, as with an older agent.
  let session: AgentManagerSession | undefined;
  let direct: DirectServer | undefined;
  if (config.directPort !== undefined) {
    const d = new DirectServer(() => session?.direct ?? new Map(), log.child('direct'));
    try {
      await d.listen(config.directPort);
      direct = d;
    } catch (e) {
      log.warn('no direct connections to intercepting clients: they go through the traffic manager', {
        reason: (e as Error).message,
      });
    }
  }
  session = new AgentManagerSession(
    address,
    {
      name: config.workloadName,
      namespace: config.namespace,
      kind: config.workloadKind,
      podName: config.podName,
      podIp: config.podIp,
      version: VERSION,
      mechanism: config.mechanism,
      // Names and ports only: environments go to the client that owns an intercept or ingest, never to
      // every watcher of the agents.
      containers: containers.map((c) => ({
        name: c.name,
        ports: config.ports
          .filter((p) => c.appPorts.includes(p.appPort))
          .map((p) => ({
            name: '',
            appPort: p.appPort,
            agentPort: p.agentPort,
            protocol: 'TCP',
            servicePorts: [],
          })),
        environment: {},
      })),
      counters: undefined,
      directPort: direct?.port ?? 0,
    },
    config.ports.map((p) => p.appPort),
    (name) => containers.find((c) => c.name === name)?.environment ?? {},
    config.managerTokenFile,
    containers,
  );
  // On every route change: eBPF capture steers exactly the intercepted ports; the direct service drops
  // the watches of vanished intercepts. (A const for the closures: `session` is a variable.)
  const agentSession = session;
  if (steering) agentSession.watchRoutes(() => steering.sync(agentSession.interceptedPorts()));
  if (direct) agentSession.watchRoutes(() => direct.routesChanged());
  session.onMountRequest = (sessionId, req) =>
    serveMount(session.client, sessionId, req, {
      containers: containers.map((c) => c.name),
      mountsDir: config.mountsDir,
      log: log.child('mounts'),
    });
  const counters = new ConnectionCounters(
    config.ports.map((p) => p.appPort),
    config.probes.map((p) => `${p.container}/${p.kind}`),
  );
  listeners = [...listenersOf(config.ports)].map(
    ([agentPort, appPorts]) =>
      new PortListener({
        agentPort,
        appPorts,
        listenAddress: config.listenAddress,
        session,
        steered: steering !== undefined,
        passthrough: config.passthrough,
        counters,
        workstationDialDeadlineMs: config.workstationDialDeadlineMs,
        direct,
      }),
  );
  let listening = false;
  const probeServer =
    config.probePort === undefined
      ? undefined
      : new ProbeServer({
          port: config.probePort,
          listenAddress: config.listenAddress,
          podIp: config.podIp,
          probes: config.probes,
          counters,
          listening: () => listening,
        });
  try {
    // The probe server first: the app's rewritten probes do not depend on the listeners, and the agent's
    // own readiness answers 503 until they are up.
    await probeServer?.listen();
    for (const l of listeners) await l.listen();
    listening = true;
  } catch (e) {
    for (const l of listeners) l.close();
    probeServer?.close();
    throw e;
  }
  log.info('tp-agent started', {
    version: VERSION,
    workload: config.workloadName,
    namespace: config.namespace,
    pod: config.podName,
    manager: address,
    mechanism: config.mechanism,
  });
  reportCounters(counters);
  const stopReports = startCounterReports(session, counters);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    log.info(`connections: ${counters.format()}`);
    steering?.sync([]);
    listening = false;
    for (const l of listeners) l.close();
    direct?.close();
    probeServer?.close();
    stopReports();
    await session.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  await session.run();
}

/**
 * Makes the connection counters readable: `kill -USR2 <agent pid>` logs them (at any log level), and at
 * debug level they are logged every minute in which they changed.
 */
function reportCounters(counters: ConnectionCounters): void {
  process.on('SIGUSR2', () => log.info(`connections: ${counters.format()}`));
  if (!log.enabled('debug')) return;
  let last = counters.format();
  setInterval(() => {
    const now = counters.format();
    if (now !== last) log.debug(`connections: ${now}`);
    last = now;
  }, 60_000).unref();
}

main().catch((e: Error) => {
  process.stderr.write(`tp-agent: ${e instanceof UsageError ? e.message : (e.stack ?? e.message)}\n`);
  process.exit(1);
});
