// The Daemon gRPC service (rpc/daemon.proto): connect/disconnect one session at a time, status, quit.
import { status as grpcStatus, type handleUnaryCall } from '@grpc/grpc-js';
import { UsageError } from '../../netaddr/parse.js';
import type { DaemonStatus } from '../../rpc/gen/connector.js';
import type { ConnectRequest, DaemonServer } from '../../rpc/gen/daemon.js';
import type { Empty } from '../../rpc/gen/google/protobuf/empty.js';
import { grpcError } from '../../rpc/unary-call.js';
import { TUNNEL_VERSION, VERSION } from '../../version/version.js';
import { writeRecord } from './leftovers.js';
import { ConnectedSession, type DaemonSettings } from './session.js';

export class RootDaemon {
  private session: ConnectedSession | undefined;
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
      await this.stopSession();
      try {
        this.session = await ConnectedSession.start(this.settings, req);
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

  disconnect(): Promise<void> {
    return this.serialized(() => this.stopSession());
  }

  private async stopSession(): Promise<void> {
    const s = this.session;
    this.session = undefined;
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
      quit: unary('Quit', async () => {
        // Answer first, then tear down: the caller waits for the socket to go away.
        setImmediate(() => void this.quit());
        return {};
      }),
    };
  }
}
