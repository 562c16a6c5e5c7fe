// The user daemon's side of the root daemon (daemons/root, through its launch API): whether this connection
// wants the VIF, bringing it up for the manager session, following the session when the connection to the
// manager is re-established, the root daemon's health for `tp status`, and stopping it on disconnect/quit.
//
// The VIF is wanted unless --no-vif, and only when there is something to route: the cluster's subnets
// (WatchClusterInfo) or --also-proxy. A standalone manager reports no subnets, so connecting to one starts
// no root daemon. The root daemon needs root: as root the user daemon starts it itself; otherwise it says
// so (ConnectInfo.root_daemon_needed) and the CLI starts it through sudo, where a terminal can prompt.
import * as grpc from '@grpc/grpc-js';
import { waitFor } from '../../command/wait.js';
import type { Logger } from '../../logging/logger.js';
import type { DaemonStatus, LogLevelRequest, LogLevelResult } from '../../rpc/gen/connector.js';
import type { ClusterAccess } from '../../rpc/gen/daemon.js';
import type { ClusterInfo } from '../../rpc/gen/manager.js';
import { errorDetails, unary } from '../../rpc/unary-call.js';
import {
  connectRootDaemon,
  type RootDaemonHandle,
  rootDaemonStatus,
  runningRootDaemon,
  startRootDaemon,
  stopRootDaemon,
} from '../root/launch.js';
import { type ManagerConnection, UserFacingError } from './manager-connection.js';

/** How long Connect waits for the manager's first cluster info. */
const CLUSTER_INFO_TIMEOUT_MS = 10_000;

export interface VifRequest {
  noVif: boolean;
  alsoProxy: string[];
  neverProxy: string[];
  allowConflictingSubnets: boolean;
  /** HOST:PORT at which the root daemon reaches the manager (the port-forward on loopback, or --manager-address). */
  managerAddress: string;
  namespace: string;
  /** Addresses never routed into the VIF (the Kubernetes API server of the port-forward). */
  keepOut: string[];
  /**
   * Connected through Kubernetes: the root daemon opens its own port-forward to the manager for the VIF's
   * TCP flows, with the user's access as `resolve` gives it (kube/cluster-access.ts), sent again whenever
   * it changes.
   */
  clusterAccess?: { managerNamespace: string; resolve: () => Promise<string> };
}

export interface VifOutcome {
  /** The VIF is wanted, no root daemon runs, and this process may not start one: the CLI must. */
  rootDaemonNeeded: boolean;
}

function notRunning(message: string): DaemonStatus {
  return { running: false, version: '', vifName: '', subnets: [], dns: '', message, kernelNat: undefined };
}

function sameRequest(a: VifRequest | undefined, b: VifRequest): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class RootDaemonLink {
  /** What the last Connect asked for, while the VIF is up (or being brought up). */
  private wanted: VifRequest | undefined;
  private daemon: RootDaemonHandle | undefined;
  /** The manager session the root daemon was last connected with. */
  private connectedSession = '';
  /** Why there is no VIF, while there is none. */
  private offReason = 'not connected';
  /** The last failure to follow a new session, shown until the next success. */
  private followError = '';
  private queue: Promise<unknown> = Promise.resolve();
  /** The cluster access the root daemon was last given ('' none), and the timer that renews it. */
  private sentAccess = '';
  private accessTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly conn: ManagerConnection,
    private readonly log: Logger,
  ) {
    conn.on('session', (sessionId: string) => {
      void this.serialized(() => this.follow(sessionId));
    });
  }

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Brings the VIF up for the current session, or records why there is none; throws UserFacingError. */
  ensure(req: VifRequest): Promise<VifOutcome> {
    return this.serialized(async () => {
      if (req.noVif) {
        await this.release('off (tp connect --no-vif)');
        return { rootDaemonNeeded: false };
      }
      const cluster = await this.conn.waitForCluster(CLUSTER_INFO_TIMEOUT_MS);
      if (!cluster)
        throw new UserFacingError(
          grpc.status.UNAVAILABLE,
          `the traffic manager did not report the cluster's subnets within ${CLUSTER_INFO_TIMEOUT_MS / 1000} s: try again, or connect with --no-vif`,
        );
      const subnets = cluster.podSubnets.length + cluster.serviceSubnets.length;
      if (subnets === 0 && req.alsoProxy.length === 0) {
        await this.release(
          'none: the traffic manager reports no cluster subnets (standalone mode); --also-proxy CIDR routes subnets through the cluster anyway',
        );
        return { rootDaemonNeeded: false };
      }
      const sessionId = this.conn.sessionId;
      if (this.daemon && sameRequest(this.wanted, req) && this.connectedSession === sessionId) {
        // Already up as asked, unless the root daemon died meanwhile.
        const st = await rootDaemonStatus(this.daemon.client).catch(() => undefined);
        if (st?.vifName) return { rootDaemonNeeded: false };
      }
      let daemon = this.daemon;
      if (daemon && !(await rootDaemonStatus(daemon.client).catch(() => undefined))) {
        // Killed meanwhile: a new one clears what it left behind.
        this.log.warn('the root daemon no longer answers: starting a new one');
        daemon.close();
        daemon = this.daemon = undefined;
        this.wanted = undefined;
      }
      // Two attempts: a root daemon found running may be on its way out (its previous user daemon was
      // killed and it is putting the workstation back, service.ts watchOwner): once it is gone, a new one.
      for (let attempt = 1; ; attempt++) {
        daemon ??= await runningRootDaemon();
        if (!daemon) {
          if (process.getuid?.() !== 0) return { rootDaemonNeeded: true };
          try {
            daemon = await startRootDaemon({ interactive: false });
          } catch (e) {
            throw new UserFacingError(grpc.status.FAILED_PRECONDITION, (e as Error).message);
          }
        }
        this.daemon = daemon;
        try {
          await this.connect(daemon, req, sessionId, cluster);
          break;
        } catch (e) {
          if (attempt === 1 && !(await rootDaemonStatus(daemon.client).catch(() => undefined))) {
            this.log.warn('the root daemon went away while connecting (it was exiting): starting a new one', {
              error: (e as Error).message,
            });
            daemon.close();
            daemon = this.daemon = undefined;
            // Bounded: past it, the second attempt meets the old daemon and fails with its error.
            await waitFor(
              'the exiting root daemon to go',
              async () => {
                const running = await runningRootDaemon();
                running?.close();
                return !running;
              },
              ROOT_DAEMON_EXIT_WAIT_MS,
              200,
            ).catch(() => {});
            continue;
          }
          // A root daemon connected to nothing is of no use: nothing is left behind.
          await this.release(`failed: ${(e as Error).message}`, { stopIdle: true });
          throw new UserFacingError(grpc.status.FAILED_PRECONDITION, (e as Error).message);
        }
      }
      this.wanted = req;
      this.renewAccess();
      return { rootDaemonNeeded: false };
    });
  }

  /**
   * The root daemon's copy of the user's credential is renewed when it changes (an exec plugin's token
   * expires in minutes to hours): checked every ACCESS_CHECK_MS, sent when different.
   */
  private renewAccess(): void {
    clearInterval(this.accessTimer);
    if (!this.wanted?.clusterAccess) return;
    this.accessTimer = setInterval(() => {
      void this.serialized(async () => {
        const req = this.wanted;
        if (!req?.clusterAccess || !this.daemon || !this.connectedSession) return;
        // A failure to resolve it now (an exec plugin that failed once) keeps the one sent: it may still be
        // good, and a root daemon refused by the API server sends its flows through this daemon anyway.
        const access = await req.clusterAccess.resolve().catch(() => undefined);
        if (access === undefined || access === this.sentAccess) return;
        this.log.info('the cluster credential changed: the root daemon gets the new one');
        await this.connect(this.daemon, req, this.connectedSession, this.conn.cluster, access).catch((e) =>
          this.log.warn("renewing the root daemon's cluster credential failed", { error: errorDetails(e) }),
        );
      });
    }, ACCESS_CHECK_MS);
    this.accessTimer.unref();
  }

  /**
   * The access for the root daemon, or undefined (then it reaches the manager through this daemon). One
   * that cannot be resolved now, after one was sent, is sent again as it was: without it the root daemon
   * would make its VIF anew.
   */
  private async clusterAccess(req: VifRequest, resolved?: string): Promise<ClusterAccess | undefined> {
    if (!req.clusterAccess) return undefined;
    try {
      return {
        kubeconfig: resolved ?? (await req.clusterAccess.resolve()),
        managerNamespace: req.clusterAccess.managerNamespace,
      };
    } catch (e) {
      const error = (e as Error).message;
      if (this.sentAccess && this.daemon) {
        this.log.warn('the cluster credential cannot be resolved now: the root daemon keeps the one it has', {
          error,
        });
        return { kubeconfig: this.sentAccess, managerNamespace: req.clusterAccess.managerNamespace };
      }
      this.log.warn(
        'the root daemon reaches the traffic manager through this daemon: the cluster credential cannot be handed on',
        { error },
      );
      return undefined;
    }
  }

  private async connect(
    daemon: RootDaemonHandle,
    req: VifRequest,
    sessionId: string,
    cluster: ClusterInfo | undefined,
    /** The cluster access when the caller has just resolved it (the renewal). */
    access?: string,
  ): Promise<DaemonStatus> {
    const clusterAccess = await this.clusterAccess(req, access);
    const status = await connectRootDaemon(daemon.client, {
      managerAddress: req.managerAddress,
      sessionId,
      sessionCredential: this.conn.credentialOf(sessionId),
      namespace: req.namespace,
      cluster,
      alsoProxy: req.alsoProxy,
      neverProxy: req.neverProxy,
      allowConflictingSubnets: req.allowConflictingSubnets,
      keepOut: req.keepOut,
      ownerPid: process.pid,
      clusterAccess,
    });
    this.sentAccess = clusterAccess?.kubeconfig ?? '';
    this.connectedSession = sessionId;
    this.followError = '';
    this.log.info('VIF up', { vif: status.vifName, subnets: status.subnets.join(','), dns: status.dns });
    return status;
  }

  /** The connection to the manager was re-established under a new session: the root daemon follows. */
  private async follow(sessionId: string): Promise<void> {
    const req = this.wanted;
    if (!req || !this.daemon || this.connectedSession === sessionId) return;
    try {
      await this.connect(this.daemon, req, sessionId, this.conn.cluster);
    } catch (e) {
      this.followError = `the VIF could not follow the new session: ${errorDetails(e)}`;
      this.log.error('VIF: reconnecting the root daemon failed', { error: errorDetails(e) });
    }
  }

  /** tp loglevel: the root daemon takes the level too. Answers '' when it did, else why not. */
  async setLogLevel(req: LogLevelRequest): Promise<string> {
    const daemon = this.daemon;
    if (!daemon) return 'no root daemon is running (one that starts later logs at its TP_LOG_LEVEL)';
    try {
      await unary<LogLevelResult>((md, opts, cb) => daemon.client.setLogLevel(req, md, opts, cb), 5_000);
      return '';
    } catch (e) {
      return `the root daemon did not take it: ${errorDetails(e)}`;
    }
  }

  /** The root daemon's view for ConnectInfo.root_daemon. */
  async status(): Promise<DaemonStatus> {
    if (!this.wanted || !this.daemon) return notRunning(this.offReason);
    try {
      const st = await rootDaemonStatus(this.daemon.client);
      if (this.followError) return { ...st, message: `${this.followError}; ${st.message}` };
      return st;
    } catch (e) {
      return notRunning(
        `the root daemon does not answer (${errorDetails(e)}): the VIF is down; tp connect starts it again`,
      );
    }
  }

  /** Disconnect/quit: the root daemon this connection used undoes everything and exits. */
  stop(): Promise<void> {
    return this.serialized(() => this.release('not connected'));
  }

  private async release(reason: string, o: { stopIdle?: boolean } = {}): Promise<void> {
    const daemon = this.daemon;
    const ours = this.wanted !== undefined;
    this.wanted = undefined;
    this.daemon = undefined;
    this.connectedSession = '';
    this.followError = '';
    this.offReason = reason;
    this.sentAccess = '';
    clearInterval(this.accessTimer);
    if (!daemon) return;
    let stop = ours;
    if (!stop && o.stopIdle) {
      // Only a root daemon with no VIF: one that serves another tp session stays.
      const st = await rootDaemonStatus(daemon.client).catch(() => undefined);
      stop = st !== undefined && !st.vifName;
    }
    daemon.close();
    if (!stop) return;
    try {
      await stopRootDaemon(daemon.socketPath);
    } catch (e) {
      this.log.warn('stopping the root daemon failed', { error: (e as Error).message });
    }
  }
}

/** How often the user's cluster credential is checked for a renewal the root daemon needs. */
const ACCESS_CHECK_MS = 60_000;

/** How long a root daemon on its way out gets to put the workstation back and remove its socket. */
const ROOT_DAEMON_EXIT_WAIT_MS = 15_000;
