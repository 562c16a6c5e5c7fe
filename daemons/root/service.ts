// The Daemon gRPC service (rpc/daemon.proto): connect/disconnect one session at a time, status, quit.
import * as fs from 'node:fs';
import { status as grpcStatus, type handleUnaryCall } from '@grpc/grpc-js';
import { type Level, parseLevel, setLevelFor } from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import type { DaemonStatus, LogLevelRequest } from '../../rpc/gen/connector.js';
import type { ConnectRequest, DaemonServer } from '../../rpc/gen/daemon.js';
import type { Empty } from '../../rpc/gen/google/protobuf/empty.js';
import { grpcError } from '../../rpc/unary-call.js';
import { TUNNEL_VERSION, VERSION } from '../../version/version.js';
import { writeRecord } from './leftovers.js';
import { ConnectedSession, type DaemonSettings } from './session.js';

/** How often the root daemon checks that the user daemon it serves still runs. */
const OWNER_CHECK_MS = 2_000;
/**
 * How long the VIF stays once its user daemon is gone, for a new one to take it over (tp connect after
 * the daemon crashed or was killed: 2.4-2.6 s on the lab). Meanwhile the VIF's DNS still forwards the
 * workstation's other names and answers cluster names from its cache, and its TCP flows go on its own
 * port-forward.
 */
const OWNER_GRACE_MS = 8_000;

export class RootDaemon {
  private session: ConnectedSession | undefined;
  /** The user daemon the session belongs to (0: not said). */
  private ownerPid = 0;
  private ownerWatch: NodeJS.Timeout | undefined;
  /** Connect, Disconnect and Quit run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private lastError = '';

  constructor(
    private readonly settings: DaemonSettings,
    private readonly socketPath: string,
    private readonly onQuit: () => void,
  ) {}

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => {});
    return next;
  }

  connect(req: ConnectRequest): Promise<DaemonStatus> {
    return this.serialized(async () => {
      // One VIF per workstation: another user daemon (another TP_RUN_DIR, another user) may not take it
      // over while its owner lives; a dead owner's session (its daemon was killed) is taken over.
      if (this.session && this.ownerPid && req.ownerPid !== this.ownerPid && processAlive(this.ownerPid))
        throw new UsageError(
          `the VIF is in use by another tp session (its user daemon is pid ${this.ownerPid}): tp quit there first, or connect with --no-vif`,
        );
      if (this.session?.follows(req)) {
        await this.session.follow(req);
        if (req.ownerPid !== this.ownerPid) this.watchOwner(req.ownerPid);
        this.lastError = '';
        return this.session.status();
      }
      await this.stopSession();
      try {
        this.session = await ConnectedSession.start(this.settings, req);
        this.watchOwner(req.ownerPid);
        this.lastError = '';
      } catch (e) {
        this.lastError = (e as Error).message;
        this.settings.log.error('connect failed', { error: this.lastError });
        throw e;
      }
      writeRecord(this.settings.stateDir, {
        pid: process.pid,
        socket: this.socketPath,
        vifName: this.settings.vifName,
      });
      return this.session.status();
    });
  }

  /**
   * The VIF lives as long as the user daemon that connected it: when that process is gone (killed, crashed)
   * nobody keeps its session with the manager alive. A new user daemon (tp connect) may take it over within
   * OWNER_GRACE_MS (its Connect names another owner: watchOwner starts again); if none does, this daemon puts
   * everything back and exits, as on tp quit.
   */
  private watchOwner(pid: number): void {
    this.ownerPid = pid;
    clearInterval(this.ownerWatch);
    if (!pid) return;
    let goneSince: number | undefined;
    this.ownerWatch = setInterval(() => {
      if (this.ownerPid !== pid || processAlive(pid)) return;
      if (goneSince === undefined) {
        goneSince = Date.now();
        this.settings.log.warn(
          'the user daemon that connected the VIF is gone: the VIF waits for a new one',
          {
            pid,
            upToMs: OWNER_GRACE_MS,
          },
        );
        return;
      }
      if (Date.now() - goneSince < OWNER_GRACE_MS) return;
      clearInterval(this.ownerWatch);
      this.settings.log.warn('no new user daemon took the VIF over: disconnecting and exiting', { pid });
      void this.quit();
    }, OWNER_CHECK_MS);
    this.ownerWatch.unref();
  }

  disconnect(): Promise<void> {
    return this.serialized(() => this.stopSession());
  }

  private async stopSession(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    this.ownerPid = 0;
    clearInterval(this.ownerWatch);
    if (s) await s.stop();
    writeRecord(this.settings.stateDir, { pid: process.pid, socket: this.socketPath });
  }

  status(): DaemonStatus {
    if (this.session) return this.session.status();
    return {
      running: true,
      version: VERSION,
      vifName: '',
      subnets: [],
      dns: '',
      message: this.lastError ? `not connected: ${this.lastError}` : 'not connected',
      kernelNat: undefined,
    };
  }

  quit(): Promise<void> {
    return this.serialized(async () => {
      await this.stopSession();
      this.onQuit();
    });
  }

  service(): DaemonServer {
    const log = this.settings.log;
    const unary =
      <Req, Res>(name: string, body: (req: Req) => Res | Promise<Res>): handleUnaryCall<Req, Res> =>
      (call, callback) => {
        Promise.resolve()
          .then(() => body(call.request))
          .then(
            (res) => callback(null, res),
            (e: unknown) => {
              const message = (e as Error).message ?? String(e);
              if (e instanceof UsageError)
                return callback(grpcError(grpcStatus.FAILED_PRECONDITION, message));
              log.error(`${name} failed`, { error: message });
              callback(grpcError(grpcStatus.INTERNAL, message));
            },
          );
      };
    return {
      version: unary<Empty, { name: string; version: string; tunnelVersion: number }>('Version', () => ({
        name: 'tp-root-daemon',
        version: VERSION,
        tunnelVersion: TUNNEL_VERSION,
      })),
      connect: unary('Connect', (req: ConnectRequest) => this.connect(req)),
      disconnect: unary('Disconnect', async () => {
        await this.disconnect();
        return {};
      }),
      status: unary('Status', () => this.status()),
      setLogLevel: unary('SetLogLevel', async (req: LogLevelRequest) => {
        let level: Level;
        try {
          level = parseLevel(req.level);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        return { previous: setLevelFor(level, req.durationSeconds * 1000), rootDaemon: '' };
      }),
      quit: unary('Quit', async () => {
        // Answer first, then tear down: the caller waits for the socket to go away.
        setImmediate(() => void this.quit());
        return {};
      }),
    };
  }
}

/** True while pid names a process (a zombie counts as gone: its owner has not reaped it yet). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}
