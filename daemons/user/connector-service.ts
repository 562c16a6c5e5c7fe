// The Connector gRPC service the CLI talks to, on top of the ManagerConnection (the session with the
// traffic manager) and the RootDaemonLink (the VIF).
import * as dns from 'node:dns/promises';
import * as net from 'node:net';
import { status } from '@grpc/grpc-js';
import { startForwardThread } from '../../kube/port-forward-thread.js';
import {
  createLogger,
  type Level,
  levelText,
  logTarget,
  onLevelChange,
  parseLevel,
  setLevelFor,
} from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import type { ConnectInfo, ConnectorServer, ConnectRequest, ListRequest } from '../../rpc/gen/connector.js';
import {
  InterceptDisposition,
  type InterceptInfo,
  type WorkloadInfoSnapshot,
} from '../../rpc/gen/manager.js';
import { grpcError } from '../../rpc/unary-call.js';
import { unaryHandlers } from '../../rpc/unary-handler.js';
import { TUNNEL_VERSION, VERSION } from '../../version/version.js';
import { tcpAgentReach } from './direct-links.js';
import { type IdentitySource, type ManagerConnection, UserFacingError } from './manager-connection.js';
import { LocalMountPorts } from './mount-ports.js';
import type { RemoteMounts } from './mounts.js';
import {
  commandNamespace,
  managerListNamespace,
  type NamespaceScope,
  visibleWorkloads,
} from './namespaces.js';
import type { RootDaemonLink } from './root-daemon-link.js';

const log = createLogger('connector');

/** How long a mount lost with its flow waits for its intercept to be restored and accepted again. */
const REMOUNT_GRACE_MS = 180_000;

const unary = unaryHandlers(log, (e) => (e instanceof UserFacingError ? e.code : undefined));

export interface DaemonInfo {
  logFile: string;
  /** The remote mounts of intercepts and ingests (sshfs). */
  mounts: RemoteMounts;
  /** Called after Quit has answered: end the session, stop serving, exit. */
  quit: () => void;
}

/**
 * The addresses of the Kubernetes API server a port-forward goes through: they must keep their path
 * whatever the cluster's subnets are (a service subnet that covers the API server's address would
 * otherwise swallow the connection to the manager itself).
 */
async function apiServerAddresses(server: string | undefined): Promise<string[]> {
  if (!server) return [];
  let host: string;
  try {
    host = new URL(server).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return [];
  }
  if (net.isIP(host)) return [host];
  try {
    return (await dns.lookup(host, { all: true })).map((a) => a.address);
  } catch (e) {
    log.warn('cannot resolve the API server host; it is not kept out of the VIF', {
      host,
      error: (e as Error).message,
    });
    return [];
  }
}

export function connectorService(
  conn: ManagerConnection,
  vif: RootDaemonLink,
  daemon: DaemonInfo,
): ConnectorServer {
  // Kubernetes: the port-forward to the manager and the settings it was made with (kube/port-forward.ts).
  let forward:
    | { close(): Promise<void>; access(): Promise<string>; setLogLevel(level: Level): void }
    | undefined;
  // The port-forward thread logs at the daemon's level, also after tp loglevel (and when its duration ends).
  onLevelChange((level) => forward?.setLogLevel(level));
  let kube = { kubeconfig: '', context: '', managerNamespace: '' };
  /** The namespace of `tp connect -n` (single-label names resolve there; every command's default). */
  let namespace = '';
  /** `tp connect --mapped-namespaces`: tp acts only there (empty: everywhere). */
  let mapped: string[] = [];
  /** The traffic manager's namespace (hidden from listings); tp-system unless told otherwise. */
  let requestedManagerNamespace = '';
  const scope = (): NamespaceScope => ({
    connected: namespace,
    mapped,
    managerNamespace: kube.managerNamespace || requestedManagerNamespace || 'tp-system',
  });
  /** The namespace a request names, else the connected one; refused when this connection does not map it. */
  const namespaceFor = (requested: string): string => {
    try {
      return commandNamespace(requested, scope());
    } catch (e) {
      throw new UserFacingError(status.INVALID_ARGUMENT, (e as Error).message);
    }
  };
  /** A listing as the request scopes it (the connected namespace by default; no system namespaces). */
  const filterList = (req: ListRequest, snapshot: WorkloadInfoSnapshot): WorkloadInfoSnapshot => {
    let workloads = visibleWorkloads(snapshot.workloads, req, scope());
    if (req.interceptsOnly) workloads = workloads.filter((w) => w.intercepts.length > 0);
    if (req.agentsOnly) workloads = workloads.filter((w) => w.agents.length > 0);
    return { workloads: workloads.map((w) => ({ ...w, intercepts: w.intercepts.map(withMount) })) };
  };
  const listNamespace = (req: ListRequest): string => {
    try {
      return managerListNamespace(req, scope());
    } catch (e) {
      throw new UserFacingError(status.INVALID_ARGUMENT, (e as Error).message);
    }
  };
  /** The volumes served as SFTP on loopback ports (--local-mount-port), by intercept or ingest name. */
  const mountPorts = new LocalMountPorts();
  /** This workstation's mount (or SFTP port) of an intercept or ingest of this session, for status and list. */
  const withMount = (i: InterceptInfo): InterceptInfo => {
    const own = i.spec !== undefined && (!i.clientSessionId || i.clientSessionId === conn.sessionId);
    const m = own ? daemon.mounts.mountOf(i.spec!.name) : undefined;
    if (m) return { ...i, mountPoint: m.mountPoint, mountReadWrite: m.readWrite };
    const p = own ? mountPorts.portOf(i.spec!.name) : undefined;
    return p ? { ...i, localMountPort: p.port, mountReadWrite: p.readWrite } : i;
  };
  /**
   * The intercept or ingest `name` as its volumes see it: `gone` (removed for good: its mount or SFTP port
   * goes too), or `activeId` while this session holds it active (a mount flow can be opened), and why not.
   */
  const volumesOf = (name: string): { gone: boolean; activeId?: string; why: string } => {
    const current = conn.intercepts().find((i) => i.spec?.name === name);
    const active =
      conn.state === 'CONNECTED' && current?.disposition === InterceptDisposition.ACTIVE && current.id;
    return {
      gone: !current || current.disposition === InterceptDisposition.REMOVED,
      activeId: active ? current.id : undefined,
      why: current?.message || 'no intercept',
    };
  };
  // An intercept that is gone (left elsewhere, revoked, its session lost for good) stops its SFTP port.
  conn.on('intercepts', () => {
    for (const name of mountPorts.names()) if (volumesOf(name).gone) void mountPorts.close(name);
  });
  /**
   * A connection to an intercept's SFTP port: one mount flow for the intercept as it is now (restored
   * after a manager restart, or not active: then the connection is closed and the log says why).
   */
  const openMountPortFlow = (name: string, readWrite: boolean) => (socket: net.Socket) => {
    const { activeId, why } = volumesOf(name);
    if (!activeId) return Promise.reject(new Error(`intercept ${name} is not active now: ${why}`));
    return conn.openMountFlow(socket, activeId, readWrite);
  };
  /** Kubernetes: the API server's addresses (never routed into the VIF). */
  let keepOut: string[] = [];
  const closeForward = async () => {
    await forward?.close();
    forward = undefined;
  };
  const connectInfo = async (): Promise<ConnectInfo> => ({
    state: conn.state,
    managerAddress: forward
      ? `${conn.address} (port-forward to ${kube.managerNamespace}/traffic-manager)`
      : conn.address,
    sessionId: conn.sessionId,
    namespace,
    managerVersion: conn.managerVersion,
    cluster: conn.cluster,
    intercepts: conn.intercepts().map(withMount),
    context: kube.context,
    kubeconfig: kube.kubeconfig,
    rootDaemon: conn.state === 'DISCONNECTED' ? undefined : await vif.status(),
    error: conn.error,
    logFile: daemon.logFile,
    logLevel: levelText(),
    daemonPid: process.pid,
    rootDaemonNeeded: false,
    mappedNamespaces: mapped,
    managerNamespace: conn.state === 'DISCONNECTED' ? '' : scope().managerNamespace,
    lastOutage: conn.lastOutage(),
  });

  /**
   * An identity token for the kubeconfig's user from the manager in managerNamespace (kube/session-token.ts);
   * the Kubernetes modules are loaded only when one is needed.
   */
  const identityFromKubeconfig = (req: ConnectRequest, onDemand: boolean): IdentitySource => ({
    onDemand,
    token: async () => {
      const [{ DEFAULT_MANAGER_NAMESPACE }, { loadKubeConfig }, { requestIdentityToken }] = await Promise.all(
        [
          import('../../kube/annotations.js'),
          import('../../kube/kubeconfig.js'),
          import('../../kube/session-token.js'),
        ],
      );
      const { kc } = loadKubeConfig({
        kubeconfig: req.kubeconfig || undefined,
        context: req.context || undefined,
      });
      return requestIdentityToken(kc, req.managerNamespace || DEFAULT_MANAGER_NAMESPACE);
    },
  });

  /** The manager part of Connect: a session at --manager-address or through a port-forward. */
  const connectManager = async (req: ConnectRequest): Promise<void> => {
    if (conn.state === 'DISCONNECTED' || req.mappedNamespaces.length > 0) mapped = [...req.mappedNamespaces];
    if (conn.state === 'DISCONNECTED') requestedManagerNamespace = req.managerNamespace;
    if (req.managerAddress) {
      // A manager reached directly may be a standalone one: authenticate only when it asks.
      // An agent's direct port listens on its pod's loopback: reachable without Kubernetes only when that
      // is this machine's (standalone agents beside the daemon).
      await conn.connect(req.managerAddress, identityFromKubeconfig(req, true), (pod) =>
        pod.podIp === '::1' || pod.podIp.startsWith('127.')
          ? Promise.resolve(tcpAgentReach(pod.podIp, pod.port))
          : undefined,
      );
      namespace = req.namespace || namespace || 'default';
      return;
    }
    if (conn.state !== 'DISCONNECTED') {
      if (!forward)
        throw new UserFacingError(
          status.FAILED_PRECONDITION,
          `already connected to the traffic manager at ${conn.address}: run tp quit first to connect through Kubernetes`,
        );
      // A flag naming another manager than this session's is reported, never silently ignored.
      const other = (
        [
          ['--manager-namespace', req.managerNamespace, kube.managerNamespace],
          ['--context', req.context, kube.context],
          ['--kubeconfig', req.kubeconfig, kube.kubeconfig],
        ] as const
      ).filter(([, asked, current]) => asked && current && asked !== current);
      if (other.length > 0)
        throw new UserFacingError(
          status.FAILED_PRECONDITION,
          `already connected to the traffic manager in namespace ${kube.managerNamespace} (context ${kube.context}); ${other
            .map(([flag, asked]) => `${flag} ${asked}`)
            .join(' ')} asks for another: run tp quit first, then tp connect again`,
        );
      if (req.namespace) namespace = req.namespace;
      return;
    }
    // No address: reach the manager's Service through the Kubernetes API server, from a thread of its own
    // (kube/port-forward-thread.ts) that loads the Kubernetes client: it weighs tens of MB of heap, and
    // every garbage collection of a thread that moves tunnel data at 1 MiB a message pays for a bigger heap.
    // The identity token is fetched meanwhile: both load the Kubernetes client (1 s of CPU each on an idle
    // core), the thread in its own isolate, so they overlap instead of adding up (docs/faults.md).
    const identity = prefetched(identityFromKubeconfig(req, false));
    let thread: Awaited<ReturnType<typeof startForwardThread>>;
    try {
      thread = await startForwardThread({
        kubeconfig: req.kubeconfig || undefined,
        context: req.context || undefined,
        managerNamespace: req.managerNamespace || undefined,
        log: logTarget(),
      });
    } catch (e) {
      const code = e instanceof UsageError ? status.INVALID_ARGUMENT : status.UNAVAILABLE;
      throw new UserFacingError(code, (e as Error).message);
    }
    forward = thread;
    kube = {
      kubeconfig: req.kubeconfig,
      context: thread.context,
      managerNamespace: thread.managerNamespace,
    };
    namespace = req.namespace || thread.namespace;
    keepOut = await apiServerAddresses(thread.server);
    try {
      await conn.connect(thread.address, identity, (pod) =>
        thread.forwardToPod(pod.namespace, pod.podName, pod.port),
      );
    } catch (e) {
      await closeForward();
      throw e;
    }
  };

  /** Disconnect and quit: the VIF first (it uses the session), then the session, then the port-forward. */
  const disconnectAll = async () => {
    await mountPorts.closeAll();
    await daemon.mounts.unmountAll();
    await vif.stop();
    await conn.disconnect();
    await closeForward();
    keepOut = [];
    namespace = '';
    mapped = [];
  };

  // A mount whose flow broke (the manager restarted, the agent's pod went): mounted again at the same
  // place once the session restored the intercept and an agent accepted it; unmounted if it is gone.
  const remountWhenBack = async (name: string) => {
    const until = Date.now() + REMOUNT_GRACE_MS;
    while (daemon.mounts.isLost(name)) {
      const { gone, activeId, why } = volumesOf(name);
      if (gone || Date.now() > until) {
        log.warn('a lost mount is not mounted again', { intercept: name, reason: why });
        await daemon.mounts.unmount(name);
        return;
      }
      if (activeId) {
        const readWrite = daemon.mounts.mountOf(name)?.readWrite === true;
        try {
          await daemon.mounts.remount(name, (socket) => conn.openMountFlow(socket, activeId, readWrite));
          log.info('mounted again', { intercept: name });
          return;
        } catch (e) {
          log.debug('mounting again failed; retrying', { intercept: name, reason: (e as Error).message });
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  daemon.mounts.onLost = (name) => void remountWhenBack(name);

  return {
    version: unary('Version', () => ({
      name: 'tp user daemon',
      version: VERSION,
      tunnelVersion: TUNNEL_VERSION,
    })),

    connect: unary('Connect', async (req) => {
      const fresh = conn.state === 'DISCONNECTED';
      // A daemon killed with -9 left its mounts behind: gone before anything new is mounted.
      if (fresh) await daemon.mounts.cleanStale();
      await connectManager(req);
      try {
        const outcome = await vif.ensure({
          noVif: req.noVif,
          alsoProxy: req.alsoProxy,
          neverProxy: req.neverProxy,
          allowConflictingSubnets: req.allowConflictingSubnets,
          managerAddress: conn.address,
          namespace,
          keepOut,
          // Through Kubernetes: the root daemon opens the port-forward to the manager itself, for the VIF's
          // TCP flows, with the user's credential as resolved here.
          clusterAccess: forward && {
            managerNamespace: kube.managerNamespace,
            resolve: forward.access.bind(forward),
          },
        });
        return { ...(await connectInfo()), rootDaemonNeeded: outcome.rootDaemonNeeded };
      } catch (e) {
        // A connect that cannot bring up the VIF leaves nothing behind: no session it made either.
        if (fresh) await disconnectAll().catch(() => {});
        throw e;
      }
    }),

    disconnect: unary('Disconnect', async () => {
      await disconnectAll();
      return {};
    }),

    status: unary('Status', () => connectInfo()),

    list: unary('List', async (req) => filterList(req, await conn.list(listNamespace(req)))),

    watchList: (call) => {
      let stop = () => {};
      try {
        const ns = listNamespace(call.request);
        let last = '';
        stop = conn.watchWorkloads(
          ns,
          (snapshot) => {
            const shown = filterList(call.request, snapshot);
            // The manager sends a snapshot on every change it sees; the user sees only changes of what is shown.
            const key = JSON.stringify(shown);
            if (key === last) return;
            last = key;
            call.write(shown);
          },
          (e) =>
            call.emit(
              'error',
              grpcError(e instanceof UserFacingError ? e.code : status.UNAVAILABLE, e.message),
            ),
        );
      } catch (e) {
        call.emit(
          'error',
          grpcError(e instanceof UserFacingError ? e.code : status.INTERNAL, (e as Error).message),
        );
        return;
      }
      call.on('cancelled', () => stop());
    },

    createIntercept: (call) => {
      const spec = call.request.spec;
      const progress = (message: string) => call.write({ message, result: undefined, error: '' });
      if (!spec) {
        call.write({ message: '', result: undefined, error: 'the intercept spec is missing' });
        call.end();
        return;
      }
      let ns: string;
      try {
        ns = namespaceFor(spec.namespace);
      } catch (e) {
        call.write({ message: '', result: undefined, error: (e as Error).message });
        call.end();
        return;
      }
      const name = spec.name || spec.workload;
      conn
        .createIntercept({ ...spec, namespace: ns }, progress)
        .then(async (result) => {
          const port = call.request.localMountPort;
          if (port) {
            try {
              await mountPorts.serve(
                name,
                port,
                call.request.mountReadWrite,
                openMountPortFlow(name, call.request.mountReadWrite),
              );
            } catch (e) {
              // Asked for and not there: nothing is left behind.
              await conn.removeIntercept(name).catch(() => {});
              throw new UserFacingError(status.FAILED_PRECONDITION, (e as Error).message);
            }
            return { ...result, localMountPort: port, mountReadWrite: call.request.mountReadWrite };
          }
          if (!call.request.mount) return result;
          progress(`Mounting the volumes of container ${result.container || '?'}`);
          try {
            const readWrite = call.request.mountReadWrite;
            const dir = await daemon.mounts.mount(name, call.request.mountPoint, readWrite, (socket) =>
              conn.openMountFlow(socket, result.id, readWrite),
            );
            return {
              ...result,
              environment: { ...result.environment, TP_ROOT: dir },
              mountPoint: dir,
              mountReadWrite: readWrite,
            };
          } catch (e) {
            // Asked for and not there: nothing is left behind.
            await conn.removeIntercept(name).catch(() => {});
            throw new UserFacingError(status.FAILED_PRECONDITION, (e as Error).message);
          }
        })
        .then(
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
      // Unmounted first: sshfs ends cleanly before its flow goes.
      await daemon.mounts.unmount(req.name);
      await mountPorts.close(req.name);
      await conn.removeIntercept(req.name);
      return {};
    }),

    revoke: unary('Revoke', async (req) => ({
      intercepts: await conn.revoke(req.workload, namespaceFor(req.namespace), req.remotePort),
    })),

    uninstall: unary('Uninstall', async (req) => {
      await conn.uninstallAgents(req.names, req.all ? req.namespace : namespaceFor(req.namespace), req.all);
      return {};
    }),

    setLogLevel: unary('SetLogLevel', async (req) => {
      let level: Level;
      try {
        level = parseLevel(req.level);
      } catch (e) {
        throw new UserFacingError(status.INVALID_ARGUMENT, (e as Error).message);
      }
      const previous = setLevelFor(level, req.durationSeconds * 1000);
      return { previous, rootDaemon: await vif.setLogLevel(req) };
    }),

    quit: (_call, callback) => {
      log.info('quit requested');
      disconnectAll()
        .catch((e: Error) => log.error('quit: disconnecting failed', { error: e.message }))
        .finally(() => {
          callback(null, {});
          daemon.quit();
        });
    },
  };
}

/**
 * Starts fetching a token now, for the first arrival (which reports its failure); every later one (a
 * re-arrival) fetches its own.
 */
export function prefetched(source: IdentitySource): IdentitySource {
  let first: Promise<string> | undefined = source.token();
  first.catch(() => {});
  return {
    onDemand: source.onDemand,
    token: () => {
      const token = first ?? source.token();
      first = undefined;
      return token;
    },
  };
}
