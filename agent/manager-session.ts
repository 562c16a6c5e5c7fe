// The agent's session with the traffic manager: arrive, heartbeat, follow the intercepts of its workload,
// review them, and reconnect with backoff when the manager goes away. While there is no session, the
// routes are empty: every connection passes through to the app.
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../logging/logger.js';
import { bearerInterceptor, withBearer } from '../rpc/call-credentials.js';
import {
  type AgentInfo,
  type Arrival,
  InterceptDisposition,
  type InterceptInfoSnapshot,
} from '../rpc/gen/manager.js';
import { managerChannelOptions } from '../rpc/grpc-options.js';
import { ManagerClient } from '../rpc/manager-service.js';
import { errorDetails, hasStatus, unary } from '../rpc/unary-call.js';
import { type PersonalRoute, plan } from './intercept-routes.js';

const log = createLogger('agent/session');
const CALL_TIMEOUT_MS = 5_000;
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5_000;

export class AgentManagerSession {
  readonly client: ManagerClient;
  /** The current session id; empty while disconnected. */
  sessionId = '';
  /** The current session's credential: the channel adds it to every call (tunnel streams included). */
  private credential = '';
  /** app port -> intercept id, for the intercepts this agent accepted. */
  routes = new Map<number, string>();
  /** app port -> its personal intercepts (HTTP filters), for the intercepts this agent accepted. */
  personal = new Map<number, PersonalRoute[]>();
  private stopped = false;
  private wakeUp: (() => void) | undefined;
  private current: { end: () => void } | undefined;

  constructor(
    readonly address: string,
    private readonly info: AgentInfo,
    private readonly capturedAppPorts: number[],
    private readonly environment: () => Record<string, string>,
    /** Called with the intercepted app ports whenever the routes change (eBPF capture steers exactly these). */
    private readonly onRoutes: (interceptedPorts: number[]) => void = () => {},
    /**
     * The pod's projected ServiceAccount token with the manager's audience (TP_MANAGER_TOKEN_FILE), read
     * again at every arrival: the kubelet rotates it. Undefined: none (standalone).
     */
    private readonly tokenFile?: string,
  ) {
    this.client = new ManagerClient(address, grpc.credentials.createInsecure(), {
      ...managerChannelOptions(),
      interceptors: [bearerInterceptor(() => this.credential)],
    });
  }

  /** The token the agent arrives with ('' without a token file). */
  private token(): string {
    if (!this.tokenFile) return '';
    try {
      return fs.readFileSync(this.tokenFile, 'utf8').trim();
    } catch (e) {
      log.warn('cannot read the ServiceAccount token; arriving without it', {
        file: this.tokenFile,
        error: (e as Error).message,
      });
      return '';
    }
  }

  /** Runs until stop(): arrive, serve the session, and after it is lost, arrive again. */
  async run(): Promise<void> {
    let backoff = MIN_BACKOFF_MS;
    let lostLogged = false;
    while (!this.stopped) {
      try {
        this.credential = '';
        const token = this.token();
        const session = await unary<Arrival>(
          (md, o, cb) => this.client.arriveAsAgent(this.info, withBearer(md, token), o, cb),
          CALL_TIMEOUT_MS,
        );
        backoff = MIN_BACKOFF_MS;
        lostLogged = false;
        this.sessionId = session.sessionId;
        this.credential = session.credential;
        log.info('arrived at the traffic manager', { manager: this.address, session: session.sessionId });
        const reason = await this.serve(session.sessionId, session.remainIntervalMs || 5_000);
        if (this.stopped) break;
        log.warn('lost the traffic manager session; passing every connection through until it is back', {
          reason,
        });
        lostLogged = true;
      } catch (e) {
        if (this.stopped) break;
        const level = lostLogged ? 'debug' : 'warn';
        log[level]('cannot reach the traffic manager; passing every connection through meanwhile', {
          manager: this.address,
          reason: errorDetails(e),
        });
        lostLogged = true;
      } finally {
        this.sessionId = '';
        this.setRoutes(new Map(), new Map());
      }
      await this.sleep(backoff + Math.floor(Math.random() * (backoff / 4)));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  /** Ends the session (Depart) and stops reconnecting. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeUp?.();
    const id = this.sessionId;
    if (id)
      await unary(
        (md, o, cb) => this.client.depart({ sessionId: id, remainIntervalMs: 0 }, md, o, cb),
        2_000,
      ).catch(() => {});
    this.current?.end();
    this.client.close();
  }

  /** Heartbeats and the intercept watch of one session; resolves with the reason the session ended. */
  private serve(sessionId: string, remainIntervalMs: number): Promise<string> {
    return new Promise((resolve) => {
      const sent = new Map<string, InterceptDisposition>();
      const watch = this.client.watchIntercepts({ sessionId, remainIntervalMs: 0 });
      let over = false;
      const end = (reason: string) => {
        if (over) return;
        over = true;
        clearInterval(heartbeat);
        watch.cancel();
        this.current = undefined;
        resolve(reason);
      };
      this.current = { end: () => end('stopping') };
      const heartbeat = setInterval(() => {
        unary(
          (md, o, cb) => this.client.remain({ session: { sessionId, remainIntervalMs: 0 } }, md, o, cb),
          CALL_TIMEOUT_MS,
        ).catch((e) => {
          // NOT_FOUND: the manager forgot us (restart, expiry); anything else shows on the watch too.
          if (hasStatus(e, grpc.status.NOT_FOUND)) end(errorDetails(e));
          else log.debug('heartbeat failed', { reason: errorDetails(e) });
        });
      }, remainIntervalMs);
      watch.on('data', (snapshot: InterceptInfoSnapshot) => {
        const p = plan(snapshot.intercepts, this.info.podName, this.capturedAppPorts, sent);
        this.setRoutes(p.routes, p.personal);
        for (const r of p.reviews) {
          log.info(
            r.disposition === InterceptDisposition.ACTIVE ? 'accepting intercept' : 'refusing intercept',
            {
              intercept: r.interceptId,
              reason: r.message || undefined,
            },
          );
          unary(
            (md, o, cb) =>
              this.client.reviewIntercept(
                {
                  session: { sessionId, remainIntervalMs: 0 },
                  interceptId: r.interceptId,
                  disposition: r.disposition,
                  message: r.message,
                  environment: r.disposition === InterceptDisposition.ACTIVE ? this.environment() : {},
                },
                md,
                o,
                cb,
              ),
            CALL_TIMEOUT_MS,
          ).catch((e) => {
            sent.delete(r.interceptId);
            log.warn('review failed', { intercept: r.interceptId, reason: errorDetails(e) });
          });
        }
      });
      watch.on('error', (e) => end(errorDetails(e)));
      watch.on('end', () => end('the manager ended the intercept watch'));
    });
  }

  private setRoutes(routes: Map<number, string>, personal: Map<number, PersonalRoute[]>): void {
    this.routes = routes;
    this.personal = personal;
    this.onRoutes([...routes.keys(), ...personal.keys()]);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wakeUp = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
