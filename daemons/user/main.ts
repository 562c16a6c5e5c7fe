// The user daemon: started by `tp connect` as its own detached process. Serves the Connector API on a
// unix socket in the run directory and logs to logDir()/connector.log.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createLogger, logDir, logToFile, parseLevel, setLevel } from '../../logging/logger.js';
import { checkConnectorSocketPath, connectorSocketPath, runDir } from '../../rpc/connector-socket.js';
import { ConnectorClient, ConnectorService } from '../../rpc/gen/connector.js';
import { localChannelOptions } from '../../rpc/grpc-options.js';
import { unary } from '../../rpc/unary-call.js';
import { VERSION } from '../../version/version.js';
import { connectorService } from './connector-service.js';
import { ManagerConnection } from './manager-connection.js';
import { RemoteMounts } from './mounts.js';
import { RootDaemonLink } from './root-daemon-link.js';

const log = createLogger('connector');

/** True when another daemon answers on the socket. */
async function anotherDaemonAnswers(socketPath: string): Promise<boolean> {
  if (!fs.existsSync(socketPath)) return false;
  const client = new ConnectorClient(
    `unix://${socketPath}`,
    grpc.credentials.createInsecure(),
    localChannelOptions(),
  );
  try {
    await unary((md, o, cb) => client.version({}, md, o, cb), 1_000);
    return true;
  } catch {
    return false;
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const logFile = path.join(logDir(), 'connector.log');
  logToFile(logFile);
  setLevel(parseLevel(process.env.TP_LOG_LEVEL));
  checkConnectorSocketPath();
  const socketPath = connectorSocketPath();
  fs.mkdirSync(runDir(), { recursive: true, mode: 0o700 });
  if (await anotherDaemonAnswers(socketPath)) {
    log.error('another user daemon already serves the socket; exiting', { socket: socketPath });
    process.stderr.write(`tp user daemon: another daemon already serves ${socketPath}\n`);
    process.exit(1);
  }
  fs.rmSync(socketPath, { force: true }); // a stale socket from a daemon that was killed

  const conn = new ManagerConnection();
  const mounts = new RemoteMounts(path.join(runDir(), 'mounts.json'));
  const vif = new RootDaemonLink(conn, log.child('vif'));
  const server = new grpc.Server();
  let quitting = false;
  const quit = (why: string) => {
    if (quitting) return;
    quitting = true;
    log.info('stopping', { reason: why });
    // Mounts and the VIF first: they use this session (SIGTERM as much as tp quit).
    void mounts
      .unmountAll()
      .catch(() => {})
      .then(() => vif.stop())
      .catch(() => {})
      .then(() => conn.disconnect())
      .finally(() => {
        server.tryShutdown(() => {});
        fs.rmSync(socketPath, { force: true });
        // Let the Quit answer reach the CLI before the process goes.
        setTimeout(() => process.exit(0), 100);
      });
  };
  server.addService(
    ConnectorService,
    connectorService(conn, vif, { logFile, mounts, quit: () => quit('tp quit') }),
  );
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (e) =>
      e ? reject(e) : resolve(),
    ),
  );
  fs.chmodSync(socketPath, 0o600);
  log.info('user daemon started', { version: VERSION, pid: process.pid, socket: socketPath });
  process.on('SIGTERM', () => quit('SIGTERM'));
  process.on('SIGINT', () => quit('SIGINT'));
}

main().catch((e: Error) => {
  log.error('user daemon failed to start', { error: e.message });
  process.stderr.write(`tp user daemon: ${e.message}\n`);
  process.exit(1);
});
