// tp-agent: the traffic agent. Configured by environment (see config.ts and README.md); bundled into one
// file (dist/bundle/tp-agent.cjs), so it imports neither the manager nor the CLI.
import { createLogger, setLevel } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import { appEnvironment } from './app-env.js';
import { agentConfigFromEnv, listenersOf } from './config.js';
import { PortListener } from './listeners.js';
import { AgentManagerSession } from './manager-session.js';

const log = createLogger('agent');

async function main(): Promise<void> {
  const config = agentConfigFromEnv(process.env);
  setLevel(config.logLevel);
  // Read once at start, so a bad TP_APP_ENV_FILE fails the agent at once, not at the first intercept.
  const environment = appEnvironment(config.appEnvFile, process.env);
  const address = `${config.managerAddress.host.includes(':') ? `[${config.managerAddress.host}]` : config.managerAddress.host}:${config.managerAddress.port}`;
  const session = new AgentManagerSession(
    address,
    {
      name: config.workloadName,
      namespace: config.namespace,
      kind: config.workloadKind,
      podName: config.podName,
      podIp: config.podIp,
      version: VERSION,
      mechanism: config.mechanism,
      containers: [
        {
          name: 'app',
          ports: config.ports.map((p) => ({
            name: '',
            appPort: p.appPort,
            agentPort: p.agentPort,
            protocol: 'TCP',
          })),
          environment: {},
        },
      ],
    },
    config.ports.map((p) => p.appPort),
    () => environment,
  );
  const listeners = [...listenersOf(config.ports)].map(
    ([agentPort, appPorts]) =>
      new PortListener({
        agentPort,
        appPorts,
        listenAddress: config.listenAddress,
        hostIp: config.hostIp,
        session,
      }),
  );
  try {
    for (const l of listeners) await l.listen();
  } catch (e) {
    for (const l of listeners) l.close();
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
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    for (const l of listeners) l.close();
    await session.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  await session.run();
}

main().catch((e: Error) => {
  process.stderr.write(`tp-agent: ${e instanceof UsageError ? e.message : (e.stack ?? e.message)}\n`);
  process.exit(1);
});
