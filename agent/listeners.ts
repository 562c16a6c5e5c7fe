// The agent's listeners: one per agent port. Each accepted connection is either passed through to the
// app on loopback or, while an intercept of its app port is active here, forwarded to the intercepting
// client: straight, when that client watches at the agent's direct service (direct.ts), else through the
// manager. The decision is made per connection: existing connections keep their path.
//
// The accept path runs once per connection, and with a new connection per request that is once per
// request: it asks the kernel only what it must (the original destination only when a listener serves
// several app ports, the address family only on a dual-stack listener) and starts reading the client
// while the app's connection is still being made, so the request is written to the app as soon as it is
// connected.
//
// An intercepted connection goes to the app instead when the workstation cannot take it: the manager is
// unreachable, it says the workstation is unavailable (session dead, dial stream down, no answer), or the
// tunnel is not open within the workstation dial deadline. Nothing was read from the client meanwhile (the
// tunnel is opened before the socket is read), so the app sees the connection whole. A workstation that
// answers but whose local port refuses resets the client, as before: its developer should see that.
//
// Kubelet probes do not arrive here: the webhook rewrote those of captured ports to the agent's probe
// port (probe-server.ts). So every connection here is a client's, passed through or intercepted.
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Passthrough } from '../agentconfig/env.js';
import { createLogger } from '../logging/logger.js';
import { AGENT_WINDOWS } from '../rpc/grpc-options.js';
import { duplicate, fdOf } from '../sys/descriptor.js';
import { FlowDialRejected, type FlowOutcome, openFlow, originate } from '../tunnel/flow.js';
import {
  connectionIdOf,
  DEFAULT_DIAL_TIMEOUT_MS,
  EARLY_DATA_VERSION,
  isWorkstationUnavailable,
  streamInfo,
} from '../tunnel/messages.js';
import { ReadSwitch, readSwitchOf, socketOnDescriptor } from '../tunnel/read-switch.js';
import { TunnelStream } from '../tunnel/stream.js';
import type { ConnectionCounters, PortCounts } from './connection-counters.js';
import type { DirectServer } from './direct.js';
import { socketPair } from './flow-socket.js';
import type { PersonalPort } from './http-router.js';
import { listenOnPort } from './listen.js';
import type { AgentManagerSession } from './manager-session.js';
import { originalDst } from './original-dst.js';
import { PassthroughThread } from './passthrough.js';

const log = createLogger('agent/listener');
/**
 * How much of what an intercepted client sent the agent keeps until the workstation's first byte, to give
 * the connection to the app if the workstation vanishes before answering: a request's headers and a
 * small body. A larger upload is not replayed; its connection is reset as before.
 */
const REPLAY_LIMIT_BYTES = 256 << 10;

export interface ListenerOptions {
  agentPort: number;
  appPorts: number[];
  /** Empty: every address (dual-stack). */
  listenAddress: string;
  session: AgentManagerSession;
  /** eBPF steering: no NAT, so the connection's local port is the app port. */
  steered: boolean;
  /** Where connections that pass through are carried (TP_PASSTHROUGH); default the thread, unless steered. */
  passthrough?: Passthrough;
  counters: ConnectionCounters;
  /** An intercepted connection whose tunnel is not open within this long goes to the app. */
  workstationDialDeadlineMs: number;
  /** Direct connections to the intercepting clients that watch here (agent/direct.ts); undefined: none. */
  direct?: DirectServer;
}

/** The loopback address the passthrough dials, or 'by-family' on a dual-stack listener. */
type Loopback = '127.0.0.1' | '::1' | 'by-family';

export class PortListener {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private loopback: Loopback = '127.0.0.1';
  /** Accepts and passes through instead of the server, under iptables capture (passthrough-thread.ts). */
  private thread: PassthroughThread | undefined;
  private threadStarted: Promise<void> | undefined;
  private unwatchRoutes: (() => void) | undefined;
  private closed = false;
  /** A 'close' listener shared by every accepted socket (called with the socket as `this`). */
  private readonly untrack: (this: net.Socket) => void;

  constructor(private readonly o: ListenerOptions) {
    const sockets = this.sockets;
    this.untrack = function (this: net.Socket) {
      sockets.delete(this);
    };
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) =>
      this.acceptedHere(s),
    );
  }

  async listen(): Promise<void> {
    const { agentPort, listenAddress, appPorts } = this.o;
    const host = await listenOnPort(this.server, agentPort, listenAddress, `agent port ${agentPort}`);
    this.loopback = host === '::' ? 'by-family' : net.isIPv6(host) ? '::1' : '127.0.0.1';
    log.info('listening', { port: agentPort, address: host, appPorts: appPorts.join(',') });
    // eBPF steering needs the server's own socket, and brings only intercepted connections anyway. The
    // server serves until the thread has started (tens of milliseconds): the listener is up at once.
    if (!this.o.steered && this.o.passthrough !== 'main') this.threadStarted = this.startThread();
  }

  /** Resolves once connections that pass through go where they will stay: the thread, or this one. */
  async passthroughReady(): Promise<'thread' | 'main thread'> {
    await this.threadStarted;
    return this.passthrough;
  }

  /**
   * Moves accepting to the passthrough thread: it takes a duplicate of the listening socket, and the
   * server closes its own (the socket stays listening through the duplicate; nothing queued is lost).
   * A thread that cannot start leaves the server as it is.
   */
  private async startThread(): Promise<void> {
    const fd = fdOf(this.server);
    if (fd === undefined) return;
    const session = this.o.session;
    let thread: PassthroughThread;
    try {
      thread = PassthroughThread.start({
        listenFd: fd,
        appPorts: this.o.appPorts,
        loopback: this.loopback,
        routed: session.interceptedPorts(),
        onHandover: (handed, appPort) => this.handedOver(handed, appPort),
        onFailed: (listenFd, reason) => this.threadFailed(listenFd, reason),
        log,
      });
    } catch (e) {
      this.mainThreadPassthrough(e as Error);
      return;
    }
    const unwatch = session.watchRoutes(() => thread.routed(session.interceptedPorts()));
    try {
      await thread.ready;
    } catch (e) {
      unwatch();
      this.mainThreadPassthrough(e as Error);
      return;
    }
    this.thread = thread;
    this.unwatchRoutes = unwatch;
    if (this.closed) {
      unwatch();
      thread.close();
      return;
    }
    for (const port of this.o.appPorts) this.o.counters.addSource(port, () => thread.countsOf(port));
    this.server.close();
    log.info('passing connections through on the passthrough thread', { port: this.o.agentPort });
  }

  private mainThreadPassthrough(e: Error): void {
    log.info('passing connections through on the main thread', { port: this.o.agentPort, reason: e.message });
  }

  /**
   * An intercepted port's connection as a descriptor, accepted by the thread (or by this thread's server:
   * acceptedHere): the main thread's usual path from here. One the whole port's intercept takes is read
   * through a ReadSwitch: its flow reads it straight into DATA messages (tunnel/flow.ts) instead of a fresh
   * 64 KiB buffer per read, and the app still reads it as usual if the workstation cannot take it (a
   * replay).
   */
  private handedOver(fd: number, appPort: number): void {
    const reads = this.wholeIntercept(appPort) ? new ReadSwitch() : undefined;
    let socket: net.Socket;
    try {
      socket = socketOnDescriptor(fd, true, reads);
    } catch (e) {
      log.warn('cannot take a connection from the passthrough thread', { reason: (e as Error).message });
      fs.closeSync(fd);
      return;
    }
    if (this.closed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.accept(socket, appPort);
  }

  /**
   * A connection this thread's server accepted (eBPF steering, TP_PASSTHROUGH=main, or before the thread
   * took over). One the whole port's intercept takes gets a ReadSwitch as the thread's hand-overs do; net
   * takes `onread` only when it creates a socket, so the connection moves to a new one on a duplicate of its
   * descriptor (the accepted socket, paused since it was accepted, has read nothing, and closing it leaves
   * the connection to the duplicate).
   */
  private acceptedHere(socket: net.Socket): void {
    const appPort = this.appPortOf(socket);
    const fd = appPort !== undefined && this.wholeIntercept(appPort) ? duplicate(socket) : undefined;
    if (fd === undefined) {
      this.accept(socket, appPort);
      return;
    }
    socket.destroy();
    this.handedOver(fd, appPort!);
  }

  /** The thread died: the server takes the listening socket back (the thread's connections are lost). */
  private threadFailed(listenFd: number, reason: string): void {
    log.error('the passthrough thread failed: accepting on the main thread', { reason });
    this.unwatchRoutes?.();
    this.thread = undefined;
    if (this.closed) return;
    this.server.listen({ fd: listenFd });
  }

  /** The listening socket's fd, which eBPF capture puts in its steering map. */
  fd(): number {
    const fd = fdOf(this.server);
    if (fd === undefined) throw new Error(`agent port ${this.o.agentPort} is not listening`);
    return fd;
  }

  /** Where connections that pass through are carried. */
  get passthrough(): 'thread' | 'main thread' {
    return this.thread ? 'thread' : 'main thread';
  }

  /** The app ports this listener serves. */
  get appPorts(): number[] {
    return this.o.appPorts;
  }

  close(): void {
    this.closed = true;
    this.unwatchRoutes?.();
    this.thread?.close();
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }

  /** `knownPort`: the app port the passthrough thread found (it read SO_ORIGINAL_DST already). */
  private accept(socket: net.Socket, knownPort?: number): void {
    this.sockets.add(socket);
    socket.once('close', this.untrack);
    socket.on('error', ignore);
    const appPort = knownPort ?? this.appPortOf(socket);
    if (appPort === undefined) {
      log.warn('cannot tell which app port a connection is for: resetting it', {
        from: socket.remoteAddress,
        agentPort: this.o.agentPort,
      });
      socket.resetAndDestroy();
      return;
    }
    const counts = this.o.counters.of(appPort);
    const session = this.o.session;
    const interceptId = this.wholeIntercept(appPort);
    if (interceptId) {
      counts.intercepted++;
      this.forward(socket, socket, appPort, interceptId, counts);
    } else if (session.personal.has(appPort) && session.sessionId) {
      counts.passedThrough++;
      void this.routeRequests(socket, appPort, counts);
    } else {
      counts.passedThrough++;
      passthrough(socket, this.loopbackFor(socket), appPort, counts);
    }
  }

  /** The intercept that takes every connection to `appPort` now (with a manager session), if any. */
  private wholeIntercept(appPort: number): string | undefined {
    const session = this.o.session;
    return session.sessionId ? session.routes.get(appPort) : undefined;
  }

  /**
   * The app port this connection was meant for: the listener's only one (so a connection straight to the
   * agent port belongs to it too), else the local port under eBPF steering or SO_ORIGINAL_DST's.
   */
  private appPortOf(socket: net.Socket): number | undefined {
    const ports = this.o.appPorts;
    if (ports.length === 1) return ports[0];
    const port = this.o.steered ? socket.localPort : originalDst(socket)?.port;
    return port !== undefined && ports.includes(port) ? port : undefined;
  }

  /** A connection's own family decides on a dual-stack listener (the peer's address is often known already). */
  private loopbackFor(socket: net.Socket): '127.0.0.1' | '::1' {
    if (this.loopback !== 'by-family') return this.loopback;
    const remote = socket.remoteAddress ?? '';
    return remote.includes(':') && !remote.startsWith('::ffff:') ? '::1' : '127.0.0.1';
  }

  /**
   * Personal intercepts on this port: HTTP is terminated and routed per request (http-router.ts, loaded
   * only now, so a port without them never pays for it).
   */
  private async routeRequests(socket: net.Socket, appPort: number, counts: PortCounts): Promise<void> {
    const { routeConnection } = await import('./http-router.js');
    const session = this.o.session;
    const port: PersonalPort = {
      appPort,
      appHost: this.loopbackFor(socket),
      counts,
      routes: () => (session.sessionId ? session.personal.get(appPort) : undefined),
      openFlow: (interceptId, client) => {
        const [outer, inner] = socketPair();
        this.forward(inner as unknown as net.Socket, client, appPort, interceptId, counts);
        return outer as unknown as net.Socket;
      },
      splice: (client, app) => splice(client, app, appPort, counts),
    };
    routeConnection(socket, port);
  }

  /** Pumps `socket` through a tunnel flow to the intercept's client; `client` names the connection. */
  private forward(
    socket: net.Socket,
    client: net.Socket,
    appPort: number,
    interceptId: string,
    counts: PortCounts,
    /** Set when the direct path failed: through the manager, within what is left of the deadline. */
    managerWithinMs?: number,
  ): void {
    const session = this.o.session;
    const connId = connectionIdOf(client, { address: unmapped(client.localAddress), port: appPort });
    const info = streamInfo({
      connId,
      sessionId: session.sessionId,
      interceptId,
      dialTimeoutMs: DEFAULT_DIAL_TIMEOUT_MS,
    });
    if (log.enabled('debug'))
      log.debug('forwarding intercepted connection', {
        from: socket.remoteAddress,
        appPort,
        intercept: interceptId,
      });
    const deadlineMs = managerWithinMs ?? this.o.workstationDialDeadlineMs;
    const reads = readSwitchOf(socket);
    const replay = {
      limit: REPLAY_LIMIT_BYTES,
      fallback: (client: net.Socket, sent: Buffer[], ended: boolean, reason: string) => {
        counts.fellBack++;
        log.info('the workstation cannot take an intercepted connection: passing it to the app', {
          appPort,
          intercept: interceptId,
          reason,
        });
        if (!client.destroyed)
          passthrough(client, this.loopbackFor(client), appPort, counts, { sent, ended });
      },
    };
    const ended = (o: FlowOutcome) => {
      if (o.kind === 'rejected' && o.refused) {
        // The workstation is there and its local port refused: the client sees it, as the developer should.
        counts.dialFailures++;
        log.info('intercepted connection refused', { appPort, reason: o.reason });
      } else if (log.enabled('debug'))
        log.debug('intercepted connection ended', { appPort, outcome: o.kind });
    };
    const direct = this.o.direct;
    if (managerWithinMs === undefined && direct?.has(interceptId)) {
      const started = Date.now();
      void direct
        .dial(interceptId, { connId, dialTimeoutMs: info.dialTimeoutMs }, deadlineMs)
        .then((answer) => {
          if ('stream' in answer) {
            if (socket.destroyed) {
              answer.stream.abort('the client closed its connection before the workstation answered');
              return;
            }
            counts.direct++;
            void originate(socket, answer.stream, info, {
              log,
              replay,
              earlyData: answer.info.version >= EARLY_DATA_VERSION,
              dialDeadlineMs: Math.max(1, deadlineMs - (Date.now() - started)),
              openedByFarSide: true,
              reads,
            }).then(ended);
            return;
          }
          // Nothing was read from the client: the connection is whole, for the manager's path or the app.
          const left = deadlineMs - (Date.now() - started);
          if (socket.destroyed) return;
          if (answer.timedOut || left <= 0) replay.fallback(socket, [], false, answer.reason);
          else {
            log.debug('direct path lost: through the traffic manager', { appPort, reason: answer.reason });
            this.forward(socket, client, appPort, interceptId, counts, left);
          }
        });
      return;
    }
    const stream = TunnelStream.open(session.client, AGENT_WINDOWS);
    if (session.managerTakesEarlyData) {
      // The client's first bytes go right behind OPEN: no round trip between DIAL_OK and the request.
      void originate(socket, stream, info, {
        log,
        replay,
        earlyData: true,
        dialDeadlineMs: deadlineMs,
        reads,
      }).then(ended);
      return;
    }
    // A manager without early data: the tunnel opens first, then the client is read.
    let decided = false;
    const decide = () => {
      if (decided) return false;
      decided = true;
      clearTimeout(deadline);
      return true;
    };
    const deadline = setTimeout(() => {
      stream.abort(`no DIAL_OK within the workstation dial deadline (${deadlineMs} ms)`);
      if (decide()) replay.fallback(socket, [], false, `the tunnel was not open within ${deadlineMs} ms`);
    }, deadlineMs);
    openFlow(stream, info).then(
      () => {
        if (decide()) void originate(socket, stream, info, { log, dialed: true, replay, reads }).then(ended);
      },
      (e: Error) => {
        if (!decide()) return;
        if (e instanceof FlowDialRejected && e.dialRejected && !isWorkstationUnavailable(e.message)) {
          socket.resetAndDestroy();
          ended({ kind: 'rejected', reason: e.message, refused: true });
        } else replay.fallback(socket, [], false, e.message);
      },
    );
  }
}

/** An 'error' listener for sockets whose 'close' does the cleanup: one function, not one per connection. */
function ignore(): void {}

/**
 * Pipes the connection to the app on loopback, with half-close and resets carried both ways. The client
 * is read at once: what it sends before the app's connection is up waits in the app socket's write buffer
 * (which still applies backpressure), so no event-loop turn is spent waiting for 'connect' first.
 * `replay`: what the client already sent to a workstation that dropped the connection before answering
 * (tunnel/flow.ts, OriginateOptions.replay) goes to the app first, and its FIN if it had sent one (the
 * tunnel's flow read it: it will not be seen again).
 */
function passthrough(
  client: net.Socket,
  host: string,
  appPort: number,
  counts: PortCounts,
  replay?: { sent: Buffer[]; ended: boolean },
): void {
  const app = net.connect({ host, port: appPort, allowHalfOpen: true, noDelay: true });
  if (replay) {
    for (const b of replay.sent) app.write(b);
    if (replay.ended) app.end();
  }
  splice(client, app, appPort, counts);
}

/** Pipes a client connection and its app connection (being dialed or up) both ways. */
export function splice(client: net.Socket, app: net.Socket, appPort: number, counts: PortCounts): void {
  app.on('error', (e: NodeJS.ErrnoException) => {
    if (e.syscall === 'connect') {
      counts.dialFailures++;
      if (e.code === 'ECONNREFUSED') log.debug('the app refused a passthrough connection', { appPort });
      else log.info('cannot dial the app for a passthrough connection', { appPort, reason: e.message });
    }
    if (!client.destroyed) client.resetAndDestroy();
  });
  client.on('error', () => {
    if (!app.destroyed) app.resetAndDestroy();
  });
  // A reset seen as a plain close on one side (destroyed without error) closes the other too.
  client.once('close', () => {
    if (!app.destroyed && !app.writableEnded) app.destroy();
  });
  app.once('close', () => {
    if (!client.destroyed && !client.writableEnded) client.destroy();
  });
  forward(client, app);
  forward(app, client);
  client.resume(); // accepted with pauseOnConnect: a 'data' listener alone does not start reading
}

/**
 * Copies one direction with backpressure and carries its FIN. Like Readable.pipe() minus its bookkeeping:
 * on a keep-alive connection this runs once per request, and the agent's cost per request is the point.
 */
function forward(from: net.Socket, to: net.Socket): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => {
    // When the other way is over too (its FIN read, nothing left to write), close() sends the same FIN as
    // shutdown() would, and the socket is done: one system call fewer per connection.
    if (to.readableEnded && to.writableLength === 0) to.destroy();
    else to.end();
  });
}

function unmapped(ip: string | undefined): string {
  const a = ip ?? '';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}
