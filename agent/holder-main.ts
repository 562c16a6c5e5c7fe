// tp-agent-holder: PID 1 of the agent container (holder.ts). Binds the agent ports and the probe port from
// the agent's own environment (TP_PORTS, TP_PROBE_PORT, TP_LISTEN_ADDRESS) and runs the agent as its
// worker: `tp-agent-holder [COMMAND ARG…]`, default `tp-agent`. Bundled on its own
// (dist/bundle/tp-agent-holder.cjs) so that it loads nothing of the agent.
import { ENV } from '../agentconfig/env.js';
import { createLogger, parseLevel, setLevel } from '../logging/logger.js';
import { parsePort, parsePortMappings, UsageError } from '../netaddr/parse.js';
import { bindSocket, type HeldSocket, runHolder } from './holder.js';

function main(): void {
  const env = process.env;
  try {
    setLevel(parseLevel(env.TP_LOG_LEVEL));
  } catch {
    // The worker reads TP_LOG_LEVEL too and stops saying why.
  }
  const agentPorts = new Set(
    parsePortMappings(env[ENV.ports]?.trim() ?? '', ENV.ports).map((p) => p.agentPort),
  );
  const probeValue = env[ENV.probePort]?.trim();
  const probePort = probeValue ? parsePort(probeValue, ENV.probePort) : undefined;
  const listenAddress = env[ENV.listenAddress]?.trim() ?? '';
  const sockets: HeldSocket[] = [];
  try {
    for (const port of agentPorts) sockets.push(bindSocket(port, listenAddress, `agent port ${port}`));
    if (probePort !== undefined && !agentPorts.has(probePort))
      sockets.push(bindSocket(probePort, listenAddress, `probe port ${probePort}`));
  } catch (e) {
    for (const s of sockets) s.close();
    throw e;
  }
  const log = createLogger('agent/holder');
  log.info('holding the listening sockets', {
    sockets: sockets.map((s) => `${s.what}@${s.address}`).join(','),
  });
  const command = process.argv.slice(2);
  runHolder({ command: command.length > 0 ? command : ['tp-agent'], sockets, log });
}

try {
  main();
} catch (e) {
  process.stderr.write(
    `tp-agent-holder: ${e instanceof UsageError ? (e as Error).message : ((e as Error).stack ?? e)}\n`,
  );
  process.exit(1);
}
