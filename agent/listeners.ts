// The agent's listeners: one per agent port. Each accepted connection is either passed through to the
// app on loopback or, while an intercept of its app port is active here, forwarded through the manager
// to the intercepting client. The decision is made per connection: existing connections keep their path.
import * as net from 'node:net';
import { createLogger } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { originate } from '../tunnel/flow.js';
import { connectionIdOf, DEFAULT_DIAL_TIMEOUT_MS, streamInfo } from '../tunnel/messages.js';
import { TunnelStream } from '../tunnel/stream.js';
import type { AgentManagerSession } from './manager-session.js';
import { originalDst } from './original-dst.js';

const log = createLogger('agent/listener');

export interface ListenerOptions {
  agentPort: number;
  appPorts: number[];
  /** Empty: every address (dual-stack). */
  listenAddress: string;
  hostIp: string | undefined;
  session: AgentManagerSession;
}

export class PortListener {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly o: ListenerOptions) {
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) =>
      this.accept(s),
    );
  }

  async listen(): Promise<void> {
    const hosts = this.o.listenAddress ? [this.o.listenAddress] : ['::', '0.0.0.0'];
    let last: NodeJS.ErrnoException | undefined;
    for (const host of hosts) {
      try {
        await new Promise<void>((resolve, reject) => {
          this.server.once('error', reject);
          this.server.listen({ port: this.o.agentPort, host }, () => {
            this.server.off('error', reject);
            resolve();
          });
        });
        log.info('listening', { port: this.o.agentPort, address: host, appPorts: this.o.appPorts.join(',') });
        return;
      } catch (e) {
        last = e as NodeJS.ErrnoException;
        // No IPv6 in this network namespace: fall back to IPv4 only.
        if (last.code !== 'EAFNOSUPPORT' && last.code !== 'EADDRNOTAVAIL') break;
      }
    }
    const why = last?.code === 'EADDRINUSE' ? 'the port is in use' : (last?.message ?? 'unknown error');
    throw new UsageError(`cannot listen on agent port ${this.o.agentPort}: ${why}`);
  }

  close(): void {
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    const appPort = this.appPortOf(socket);
    if (appPort === undefined) {
      log.warn('cannot tell which app port a connection is for: resetting it', {
        from: socket.remoteAddress,
        agentPort: this.o.agentPort,
      });
      socket.resetAndDestroy();
      return;
    }
    const session = this.o.session;
    const interceptId = session.routes.get(appPort);
    const fromHost = this.o.hostIp !== undefined && unmapped(socket.remoteAddress) === this.o.hostIp;
    if (interceptId && session.sessionId && !fromHost) this.forward(socket, appPort, interceptId);
    else passthrough(socket, appPort);
  }

  /** The app port this connection was meant for: the listener's only one, or SO_ORIGINAL_DST's. */
  private appPortOf(socket: net.Socket): number | undefined {
    if (this.o.appPorts.length === 1) return this.o.appPorts[0];
    const dst = originalDst(socket);
    return dst && this.o.appPorts.includes(dst.port) ? dst.port : undefined;
  }

  private forward(socket: net.Socket, appPort: number, interceptId: string): void {
    const session = this.o.session;
    const connId = connectionIdOf(socket, { address: unmapped(socket.localAddress), port: appPort });
    const info = streamInfo({
      connId,
      sessionId: session.sessionId,
      interceptId,
      dialTimeoutMs: DEFAULT_DIAL_TIMEOUT_MS,
    });
    log.debug('forwarding intercepted connection', {
      from: socket.remoteAddress,
      appPort,
      intercept: interceptId,
    });
    const stream = new TunnelStream(session.client.tunnel());
    void originate(socket, stream, info, { log }).then((o) => {
      if (o.kind === 'rejected') log.info('intercepted connection refused', { appPort, reason: o.reason });
      else log.debug('intercepted connection ended', { appPort, outcome: o.kind });
    });
  }
}

/** Pipes the connection to the app on loopback, with half-close and resets carried both ways. */
function passthrough(client: net.Socket, appPort: number): void {
  const v6 = client.localAddress?.includes(':') && !client.localAddress.startsWith('::ffff:');
  const host = v6 ? '::1' : '127.0.0.1';
  const app = net.connect({ host, port: appPort, allowHalfOpen: true, noDelay: true });
  app.once('connect', () => {
    forward(client, app);
    forward(app, client);
    client.resume(); // accepted with pauseOnConnect: a 'data' listener alone does not start reading
  });
  app.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'ECONNREFUSED') log.debug('the app refused a passthrough connection', { appPort });
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
  from.on('end', () => to.end());
}

function unmapped(ip: string | undefined): string {
  const a = ip ?? '';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}
