// The Connector gRPC service the CLI talks to, on top of the ManagerConnection.
import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { createLogger } from '../../logging/logger.js';
import type { ConnectInfo, ConnectorServer } from '../../rpc/gen/connector.js';
import { grpcError } from '../../rpc/unary-call.js';
import { TUNNEL_VERSION, VERSION } from '../../version/version.js';
import { type ManagerConnection, UserFacingError } from './manager-connection.js';

const log = createLogger('connector');

type Handler<Req, Res> = (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void;

function unary<Req, Res>(name: string, body: (req: Req) => Res | Promise<Res>): Handler<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => body(call.request))
      .then(
        (res) => callback(null, res),
        (e: unknown) => {
          if (e instanceof UserFacingError) return callback(grpcError(e.code, e.message));
          log.error(`${name} failed`, { error: e });
          callback(grpcError(status.INTERNAL, `${name} failed: ${(e as Error).message}`));
        },
      );
  };
}

export interface DaemonInfo {
  logFile: string;
  /** Called after Quit has answered: end the session, stop serving, exit. */
  quit: () => void;
}

export function connectorService(conn: ManagerConnection, daemon: DaemonInfo): ConnectorServer {
  const connectInfo = (): ConnectInfo => ({
    state: conn.state,
    managerAddress: conn.address,
    sessionId: conn.sessionId,
    namespace: '',
    managerVersion: conn.managerVersion,
    cluster: undefined,
    intercepts: conn.intercepts(),
    context: '',
    kubeconfig: '',
    rootDaemon: undefined,
    error: conn.error,
    logFile: daemon.logFile,
    daemonPid: process.pid,
  });

  return {
    version: unary('Version', () => ({
      name: 'tp user daemon',
      version: VERSION,
      tunnelVersion: TUNNEL_VERSION,
    })),

    connect: unary('Connect', async (req) => {
      if (!req.managerAddress)
        throw new UserFacingError(
          status.INVALID_ARGUMENT,
          'no manager address: use tp connect --manager-address HOST:PORT (port-forwarding comes with the Kubernetes integration)',
        );
      await conn.connect(req.managerAddress);
      return connectInfo();
    }),

    disconnect: unary('Disconnect', async () => {
      await conn.disconnect();
      return {};
    }),

    status: unary('Status', () => connectInfo()),

    list: unary('List', async (req) => {
      const snapshot = await conn.list(req.namespace);
      if (req.interceptsOnly) snapshot.workloads = snapshot.workloads.filter((w) => w.intercepts.length > 0);
      if (req.agentsOnly) snapshot.workloads = snapshot.workloads.filter((w) => w.agents.length > 0);
      return snapshot;
    }),

    createIntercept: (call) => {
      const spec = call.request.spec;
      const progress = (message: string) => call.write({ message, result: undefined, error: '' });
      if (!spec) {
        call.write({ message: '', result: undefined, error: 'the intercept spec is missing' });
        call.end();
        return;
      }
      conn.createIntercept(spec, progress).then(
        (result) => {
          call.write({ message: '', result, error: '' });
          call.end();
        },
        (e: Error) => {
          if (!(e instanceof UserFacingError)) log.error('CreateIntercept failed', { error: e });
          call.emit('error', grpcError(e instanceof UserFacingError ? e.code : status.INTERNAL, e.message));
        },
      );
    },

    removeIntercept: unary('RemoveIntercept', async (req) => {
      await conn.removeIntercept(req.name);
      return {};
    }),

    uninstall: unary('Uninstall', () => {
      throw new UserFacingError(
        status.UNIMPLEMENTED,
        'uninstalling agents needs the Kubernetes integration; with a standalone manager, stop tp-agent instead',
      );
    }),

    quit: (_call, callback) => {
      log.info('quit requested');
      conn.disconnect().finally(() => {
        callback(null, {});
        daemon.quit();
      });
    },
  };
}
