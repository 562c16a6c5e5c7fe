// The Connector gRPC service the CLI talks to, on top of the ManagerConnection.
import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { ManagerForward } from '../../kube/port-forward.js';
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
  // Kubernetes: the port-forward to the manager and the settings it was made with (kube/port-forward.ts).
  let forward: { close(): Promise<void> } | undefined;
  let kube = { kubeconfig: '', context: '', namespace: '', managerNamespace: '' };
  const closeForward = async () => {
    await forward?.close();
    forward = undefined;
  };
  const connectInfo = (): ConnectInfo => ({
    state: conn.state,
    managerAddress: forward
      ? `${conn.address} (port-forward to ${kube.managerNamespace}/traffic-manager)`
      : conn.address,
    sessionId: conn.sessionId,
    namespace: kube.namespace,
    managerVersion: conn.managerVersion,
    cluster: undefined,
    intercepts: conn.intercepts(),
    context: kube.context,
    kubeconfig: kube.kubeconfig,
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
      if (req.managerAddress) {
        await conn.connect(req.managerAddress);
        return connectInfo();
      }
      if (conn.state !== 'DISCONNECTED' && forward) return connectInfo();
      // No address: reach the manager's Service through the Kubernetes API server. The Kubernetes modules
      // are loaded only now: they weigh tens of MB of heap, and every garbage collection of a daemon that
      // moves tunnel data at 1 MiB a message pays for a bigger heap.
      const [{ DEFAULT_MANAGER_NAMESPACE }, { loadKubeConfig }, { forwardToManager }] = await Promise.all([
        import('../../kube/annotations.js'),
        import('../../kube/kubeconfig.js'),
        import('../../kube/port-forward.js'),
      ]);
      let loaded: ReturnType<typeof loadKubeConfig>;
      try {
        loaded = loadKubeConfig({
          kubeconfig: req.kubeconfig || undefined,
          context: req.context || undefined,
        });
      } catch (e) {
        throw new UserFacingError(status.INVALID_ARGUMENT, (e as Error).message);
      }
      const managerNamespace = req.managerNamespace || DEFAULT_MANAGER_NAMESPACE;
      try {
        forward = await forwardToManager(loaded.kc, log.child('port-forward'), managerNamespace);
      } catch (e) {
        throw new UserFacingError(status.UNAVAILABLE, (e as Error).message);
      }
      kube = {
        kubeconfig: req.kubeconfig,
        context: loaded.kc.getCurrentContext(),
        namespace: req.namespace || loaded.namespace,
        managerNamespace,
      };
      try {
        await conn.connect((forward as ManagerForward).address);
      } catch (e) {
        await closeForward();
        throw e;
      }
      return connectInfo();
    }),

    disconnect: unary('Disconnect', async () => {
      await conn.disconnect();
      await closeForward();
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

    uninstall: unary('Uninstall', async (req) => {
      await conn.uninstallAgents(req.names, req.namespace, req.all);
      return {};
    }),

    quit: (_call, callback) => {
      log.info('quit requested');
      conn.disconnect().finally(async () => {
        await closeForward().catch(() => {});
        callback(null, {});
        daemon.quit();
      });
    },
  };
}
