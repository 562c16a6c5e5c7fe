// The agent's session with the traffic manager: arrive, heartbeat, follow the intercepts of its workload,
// review them, and reconnect with backoff when the manager goes away. While there is no session, the
// routes are empty: every connection passes through to the app.
import * as fs from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../logging/logger.js';
import { bearerInterceptor, withBearer } from '../rpc/call-credentials.js';
import {
  type AgentInfo,
  type Arrival,
  type DialRequest,
  InterceptDisposition,
  type InterceptInfoSnapshot,
} from '../rpc/gen/manager.js';
import { managerChannelOptions } from '../rpc/grpc-options.js';
import { ManagerClient } from '../rpc/manager-service.js';
import { errorDetails, hasStatus, unary } from '../rpc/unary-call.js';
import { EARLY_DATA_VERSION } from '../tunnel/messages.js';
import type { AppContainer } from './containers.js';
import { type DirectIntercept, type PersonalRoute, plan } from './intercept-routes.js';

const log = createLogger('agent/session');

const CALL_TIMEOUT_MS = 5_000;
/**
 * An arrival not answered within this long is retried on a fresh channel: a connection attempt to a
 * manager pod that is gone hangs until the kernel gives up on the SYN (one to two minutes: the Service
 * still sends new connections to the old pod's IP until kube-proxy hears it is gone), and a grpc-js channel
 * makes no other attempt meanwhile (grpc-js's transport connects with net.connect and no timeout). That
 * fits the 78-135 s agents took to come back after a manager restart, which the 5 s backoff cannot explain.
 */
const ARRIVE_TIMEOUT_MS = 3_000;
/**
 * How long the channel may take to connect before the attempt starts over on a fresh one. Inside the
 * cluster a connection takes milliseconds; one that takes longer went to the old manager pod's IP (the
 * Service keeps a terminating pod's endpoint while no other is ready) and would hang until the arrival
 * times out, up to 3 s after the new pod became Ready (seen in the fault suite, docs/faults.md). Attempts in
 * a row allow 1, 2, 3, 1, 2, 3… s, so that a manager too busy to finish a connection within a second is
 * still reached, while most attempts stay short.
 */
const CONNECT_TIMEOUT_MS = 1_000;
const MIN_BACKOFF_MS = 250;
/** Capped low: a restarted manager is found within a second of answering (docs/faults.md). */
const MAX_BACKOFF_MS = 1_000;

export class AgentManagerSession {
  /** The channel to the manager; replaced by a fresh one after a failed arrival (ARRIVE_TIMEOUT_MS). */
  client: ManagerClient;
  /** The current session id; empty while disconnected. */
  sessionId = '';
  /**
   * The current session's manager takes early data (tunnel/messages.ts EARLY_DATA_VERSION): an intercepted
   * connection's first bytes go right behind its OPEN.
   */
  managerTakesEarlyData = false;
  /** The current session's credential: the channel adds it to every call (tunnel streams included). */
  private credential = '';
  /** The ArriveAsAgent call in flight, if any. */
  private arrival: Promise<Arrival> | undefined;
  /** app port -> intercept id, for the intercepts this agent accepted. */
  routes = new Map<number, string>();
  /** app port -> its personal intercepts (HTTP filters), for the intercepts this agent accepted. */
  personal = new Map<number, PersonalRoute[]>();
  /**
   * The intercepts this agent accepted, by id, with what their client shows to receive their connections
   * directly (agent/direct.ts); emptied with the routes when the session is lost.
   */
  direct = new Map<string, DirectIntercept>();
  /** Called after every change of the routes: watchRoutes(). */
  private readonly routeWatchers = new Set<() => void>();
  /**
   * Mount flows the manager asks this agent to serve (DialRequest.mount, agent/file-server.ts); set before
   * run(). Unset: the agent does not watch for them.
   */
  onMountRequest: ((sessionId: string, req: DialRequest) => void) | undefined;
  private stopped = false;
  private wakeUp: (() => void) | undefined;
  private current: { end: () => void } | undefined;

  constructor(
    readonly address: string,
    private readonly info: AgentInfo,
    private readonly capturedAppPorts: number[],
    /** The environment of the named app container (the one a review names). */
    private readonly environment: (container: string) => Record<string, string>,
    /**
     * The pod's projected ServiceAccount token with the manager's audience (TP_MANAGER_TOKEN_FILE), read
     * again at every arrival: the kubelet rotates it. Undefined: none (standalone).
     */
    private readonly tokenFile?: string,
    /** The pod's app containers: which one an intercept or ingest means (agent/containers.ts). */
    private readonly containers: AppContainer[] = [],
  ) {
    this.client = this.newClient();
  }

  /**
   * A channel of its own (a local subchannel pool: the global pool would hand a new channel the same
   * stuck connection attempt).
   */
  private newClient(): ManagerClient {
    return new ManagerClient(this.address, grpc.credentials.createInsecure(), {
      ...managerChannelOptions(),
      'grpc.use_local_subchannel_pool': 1,
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
    let failedAttempts = 0;
    while (!this.stopped) {
      try {
        this.credential = '';
        await channelReady(this.client, CONNECT_TIMEOUT_MS * (1 + (failedAttempts % 3)));
        const token = this.token();
        const arrival = unary<Arrival>(
          (md, o, cb) => this.client.arriveAsAgent(this.info, withBearer(md, token), o, cb),
          ARRIVE_TIMEOUT_MS,
        );
        this.arrival = arrival;
        const session = await arrival.finally(() => {
          this.arrival = undefined;
        });
        // Stopped while arriving: stop() departs this session (it waits for the arrival), nothing to serve.
        if (this.stopped) break;
        backoff = MIN_BACKOFF_MS;
        lostLogged = false;
        failedAttempts = 0;
        this.sessionId = session.sessionId;
        this.credential = session.credential;
        this.managerTakesEarlyData = session.tunnelVersion >= EARLY_DATA_VERSION;
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
        failedAttempts++;
        // Whatever failed, the next attempt starts from a new connection (see ARRIVE_TIMEOUT_MS).
        this.client.close();
        this.client = this.newClient();
      } finally {
        this.sessionId = '';
        this.setRoutes(new Map(), new Map(), new Map());
      }
      await this.sleep(backoff + Math.floor(Math.random() * (backoff / 4)));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  /** Ends the session (Depart) and stops reconnecting. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeUp?.();
    let id = this.sessionId;
    const arriving = this.arrival;
    if (!id && arriving) {
      // An arrival in flight: the manager may already hold a session for it; depart it rather than leave
      // the manager to find it gone only when its heartbeats stop.
      const arrived = await Promise.race([arriving.catch(() => undefined), delay(2_000)]);
      if (arrived) {
        id = arrived.sessionId;
        this.credential = arrived.credential;
      }
    }
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
      const dials = this.watchMountRequests(sessionId);
      let over = false;
      const end = (reason: string) => {
        if (over) return;
        over = true;
        clearInterval(heartbeat);
        watch.cancel();
        dials?.cancel();
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
        const p = plan(snapshot.intercepts, this.info.podName, this.capturedAppPorts, sent, this.containers);
        this.setRoutes(p.routes, p.personal, p.direct);
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
                  environment:
                    r.disposition === InterceptDisposition.ACTIVE ? this.environment(r.container) : {},
                  container: r.container,
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

  /** The session's mount requests; a lost watch is opened again while the session lasts. */
  private watchMountRequests(sessionId: string): { cancel(): void } | undefined {
    const handler = this.onMountRequest;
    if (!handler) return undefined;
    let call: ReturnType<ManagerClient['watchDial']> | undefined;
    let cancelled = false;
    const open = () => {
      if (cancelled || this.sessionId !== sessionId) return;
      const c = this.client.watchDial({ sessionId, remainIntervalMs: 0 });
      call = c;
      c.on('data', (req: DialRequest) => {
        if (req.mount) handler(sessionId, req);
      });
      c.on('error', (e) => {
        if (!cancelled) log.debug('mount request watch failed; reopening', { reason: errorDetails(e) });
      });
      c.on('close', () => {
        if (!cancelled) setTimeout(open, 1_000).unref();
      });
    };
    open();
    return {
      cancel: () => {
        cancelled = true;
        call?.cancel();
      },
    };
  }

  /** The app ports with an intercept here now, global or personal. */
  interceptedPorts(): number[] {
    return [...this.routes.keys(), ...this.personal.keys()];
  }

  /**
   * Calls `watcher` after every change of the routes, in the order they were added (eBPF steering of the
   * intercepted ports, agent/direct.ts dropping the watches of vanished intercepts, the passthrough
   * thread's intercepted ports); returns the function that stops it.
   */
  watchRoutes(watcher: () => void): () => void {
    this.routeWatchers.add(watcher);
    return () => this.routeWatchers.delete(watcher);
  }

  private setRoutes(
    routes: Map<number, string>,
    personal: Map<number, PersonalRoute[]>,
    direct: Map<string, DirectIntercept>,
  ): void {
    this.routes = routes;
    this.personal = personal;
    this.direct = direct;
    for (const w of this.routeWatchers) w();
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

/** Resolves once `client`'s channel is connected; rejects after `ms` without a connection. */
function channelReady(client: grpc.Client, ms: number): Promise<void> {
  return new Promise((resolve, reject) =>
    client.waitForReady(Date.now() + ms, (e) =>
      e ? reject(new Error(`no connection within ${ms} ms (${e.message})`)) : resolve(),
    ),
  );
}
