// The CLI's side of the Connector API: find the user daemon on its unix socket, start it when needed,
// call it. The CLI talks to the daemon only through this gRPC contract, never through its code.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { logDir } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { checkConnectorSocketPath, connectorSocketPath, connectorTarget } from '../rpc/connector-socket.js';
import {
  type ConnectInfo,
  ConnectorClient,
  type InterceptProgress,
  type ListRequest,
  type LogLevelResult,
} from '../rpc/gen/connector.js';
import type {
  InterceptInfo,
  InterceptInfoSnapshot,
  InterceptSpec,
  VersionInfo,
  WorkloadInfoSnapshot,
} from '../rpc/gen/manager.js';
import { localChannelOptions } from '../rpc/grpc-options.js';
import { errorDetails, unary } from '../rpc/unary-call.js';
import type { MountRequest } from './mount-flag.js';

const CALL_TIMEOUT_MS = 15_000;
/** Connect covers starting a port-forward and the first arrival, on a machine that may be busy. */
const CONNECT_TIMEOUT_MS = 60_000;
const START_TIMEOUT_MS = 15_000;

export const NOT_CONNECTED = 'not connected: run tp connect';

/** What `tp connect` says about the VIF (the root daemon). */
export interface VifFlags {
  noVif: boolean;
  alsoProxy: string[];
  neverProxy: string[];
  allowConflictingSubnets: boolean;
}

const DEFAULT_VIF: VifFlags = { noVif: false, alsoProxy: [], neverProxy: [], allowConflictingSubnets: false };

/** Turns a failed daemon call into the one line the user sees. */
function userError(e: unknown): UsageError {
  return new UsageError(errorDetails(e));
}

export class DaemonClient {
  private constructor(private readonly client: ConnectorClient) {}

  /** The running daemon, or undefined when none answers on the socket. */
  static async find(): Promise<DaemonClient | undefined> {
    if (!fs.existsSync(connectorSocketPath())) return undefined;
    const client = new ConnectorClient(
      connectorTarget(),
      grpc.credentials.createInsecure(),
      localChannelOptions(),
    );
    try {
      await unary<VersionInfo>((md, o, cb) => client.version({}, md, o, cb), 2_000);
      return new DaemonClient(client);
    } catch {
      client.close();
      return undefined;
    }
  }

  /** The running daemon, or a UsageError telling the user to connect. */
  static async require(): Promise<DaemonClient> {
    const d = await DaemonClient.find();
    if (!d) throw new UsageError(NOT_CONNECTED);
    return d;
  }

  /** Starts the daemon as a detached process and waits for its socket. */
  static async launch(progress: (line: string) => void): Promise<DaemonClient> {
    checkConnectorSocketPath();
    const main = fileURLToPath(new URL('../daemons/user/main.js', import.meta.url));
    const logFile = path.join(logDir(), 'connector.log');
    fs.mkdirSync(logDir(), { recursive: true });
    // The daemon's own stdout/stderr go to its log too: a crash at start leaves its reason there.
    const out = fs.openSync(logFile, 'a', 0o600);
    progress('Launching the tp user daemon');
    // --single-threaded-gc, as the root daemon: V8's parallel and concurrent GC helpers cost more CPU than
    // they save on a workstation whose cores the tunnel's other processes need (measured on the lab, 200 MiB
    // through an intercept: the daemon's threads 1.44 -> 1.1 CPU-seconds, the helpers 0.47 -> 0.05).
    const child = spawn(process.execPath, ['--single-threaded-gc', '--', main], {
      detached: true,
      stdio: ['ignore', out, out],
      env: process.env,
    });
    fs.closeSync(out);
    let exited: number | null | undefined;
    child.once('exit', (code) => {
      exited = code;
    });
    child.unref();
    const until = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < until) {
      // Another `tp connect` may have started a daemon at the same moment: ours then exits, theirs serves.
      const d = await DaemonClient.find();
      if (d) return d;
      if (exited !== undefined)
        throw new UsageError(`the tp user daemon exited at start (code ${exited}): see ${logFile}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new UsageError(
      `the tp user daemon did not start within ${START_TIMEOUT_MS / 1000} s: see ${logFile}`,
    );
  }

  close(): void {
    this.client.close();
  }

  version(): Promise<VersionInfo> {
    return this.call((md, o, cb) => this.client.version({}, md, o, cb));
  }

  status(): Promise<ConnectInfo> {
    return this.call((md, o, cb) => this.client.status({}, md, o, cb));
  }

  /**
   * An empty managerAddress: the daemon port-forwards to the manager with the kube settings. The answer's
   * rootDaemonNeeded: the VIF needs a root daemon that the user daemon cannot start (startRootDaemon, then
   * connect again).
   */
  connect(
    managerAddress: string,
    kube: {
      kubeconfig?: string;
      context?: string;
      namespace?: string;
      managerNamespace?: string;
      mappedNamespaces?: string[];
    } = {},
    vif: VifFlags = DEFAULT_VIF,
  ): Promise<ConnectInfo> {
    return this.call(
      (md, o, cb) =>
        this.client.connect(
          {
            managerAddress,
            kubeconfig: kube.kubeconfig ?? '',
            context: kube.context ?? '',
            namespace: kube.namespace ?? '',
            managerNamespace: kube.managerNamespace ?? '',
            mappedNamespaces: kube.mappedNamespaces ?? [],
            ...vif,
          },
          md,
          o,
          cb,
        ),
      CONNECT_TIMEOUT_MS,
    );
  }

  list(req: ListRequest): Promise<WorkloadInfoSnapshot> {
    return this.call((md, o, cb) => this.client.list(req, md, o, cb));
  }

  /**
   * Calls onSnapshot with the listing and again on every change; resolves when the daemon ends the
   * stream (it rejects with the reason), never by itself otherwise: the user interrupts it.
   */
  watchList(req: ListRequest, onSnapshot: (snapshot: WorkloadInfoSnapshot) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const call = this.client.watchList(req);
      call.on('data', onSnapshot);
      call.on('error', (e) => reject(userError(e)));
      call.on('end', () => resolve());
    });
  }

  /**
   * Creates an intercept (or ingest), showing the daemon's progress lines; resolves with the active
   * intercept. `mount`: mount the container's volumes (at mountPoint, or where the daemon chooses), or
   * serve them on 127.0.0.1:localMountPort.
   */
  createIntercept(
    spec: InterceptSpec,
    progress: (line: string) => void,
    mount: MountRequest = { mount: false, mountPoint: '', mountReadWrite: false, localMountPort: 0 },
  ): Promise<InterceptInfo> {
    return new Promise((resolve, reject) => {
      const call = this.client.createIntercept({ spec, ...mount });
      let result: InterceptInfo | undefined;
      call.on('data', (p: InterceptProgress) => {
        if (p.message) progress(p.message);
        if (p.error) reject(new UsageError(p.error));
        if (p.result) result = p.result;
      });
      call.on('error', (e) => reject(userError(e)));
      call.on('end', () =>
        result ? resolve(result) : reject(new UsageError('the user daemon gave no result')),
      );
    });
  }

  /** Removes the agent from workloads (Kubernetes); resolves when their pods rolled. */
  uninstall(names: string[], namespace: string, all: boolean): Promise<void> {
    // Waits for the pods to roll: allow as long as the manager waits for a rollout.
    return this.call(
      (md, o, cb) => this.client.uninstall({ names, namespace, all }, md, o, cb),
      300_000,
    ).then(() => {});
  }

  /** Ends other users' intercepts of a workload (an admin's action); answers the ones ended. */
  revoke(workload: string, namespace: string, remotePort: number): Promise<InterceptInfo[]> {
    return this.call<InterceptInfoSnapshot>((md, o, cb) =>
      this.client.revoke({ session: undefined, workload, namespace, remotePort }, md, o, cb),
    ).then((r) => r.intercepts);
  }

  removeIntercept(name: string): Promise<void> {
    return this.call((md, o, cb) => this.client.removeIntercept({ name }, md, o, cb)).then(() => {});
  }

  /** tp loglevel: the user daemon's and the root daemon's level, for `durationSeconds` (0: until they stop). */
  setLogLevel(level: string, durationSeconds: number): Promise<LogLevelResult> {
    return this.call((md, o, cb) => this.client.setLogLevel({ level, durationSeconds }, md, o, cb));
  }

  /** Ends the session (and the VIF); the daemon keeps running. */
  disconnect(): Promise<void> {
    return this.call((md, o, cb) => this.client.disconnect({}, md, o, cb)).then(() => {});
  }

  quit(): Promise<void> {
    return this.call((md, o, cb) => this.client.quit({}, md, o, cb)).then(() => {});
  }

  private async call<Res>(
    start: (
      md: grpc.Metadata,
      o: Partial<grpc.CallOptions>,
      cb: (e: grpc.ServiceError | null, r: Res) => void,
    ) => unknown,
    timeoutMs = CALL_TIMEOUT_MS,
  ): Promise<Res> {
    try {
      return await unary(start, timeoutMs);
    } catch (e) {
      throw userError(e);
    }
  }
}

/** Waits until the process is gone; false if it is still there after timeoutMs. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!isRunning(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** A zombie (exited, not yet reaped by whoever adopted the detached daemon) counts as gone. */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}
