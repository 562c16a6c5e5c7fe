// The socket half of the TCP "system stack" (main thread): the listener on the VIF's address that the
// rewritten flows arrive at, the dial of each new flow's destination through the FlowDialer, and the
// hand-over of each accepted connection to its dialed flow. The packet half (tcp-nat.ts) reports new flows
// and learns the outcome through NatControl.
import * as net from 'node:net';
import type { Logger } from '../logging/logger.js';
import { DialRejectedError, type FlowDialer, type TcpDial } from './flows.js';
import { PROTO_TCP } from './packet.js';
import type { OpenedFlow } from './tcp-nat.js';

/** How long a dialed flow waits for the kernel to hand its connection to the listener. */
const ACCEPT_TIMEOUT_MS = 10_000;

export interface NatControl {
  dialed(key: string): void;
  rejected(key: string): void;
  closed(key: string): void;
  abandoned(key: string): void;
}

interface Pending {
  key: string;
  dial: TcpDial;
  timer: NodeJS.Timeout;
}

export class TcpListener {
  private readonly servers = new Map<4 | 6, net.Server>();
  readonly ports: { 4?: number; 6?: number } = {};
  /** Dialed flows waiting for their connection, by fake peer "ip|port". */
  private readonly pending = new Map<string, Pending>();
  private readonly sockets = new Set<net.Socket>();
  private stopped = false;
  dialsRejected = 0;

  private constructor(
    private readonly dialer: FlowDialer,
    private readonly nat: NatControl,
    private readonly log: Logger,
  ) {}

  /** Listens on the VIF's address of each family (an ephemeral port each). */
  static async start(
    addresses: { 4?: string; 6?: string },
    dialer: FlowDialer,
    nat: NatControl,
    log: Logger,
  ): Promise<TcpListener> {
    const l = new TcpListener(dialer, nat, log);
    try {
      for (const family of [4, 6] as const) {
        const address = addresses[family];
        if (!address) continue;
        // The default write high-water mark (16 KiB) is kept on purpose: the tunnel stream pauses after a
        // 1 MiB message until the kernel took it, which bounds each flow's memory to about its HTTP/2
        // window; a 4 MiB mark measured no faster here and would cost 4 MiB per flow.
        // Paused: nothing is read before the dialer adopted the connection (FlowDialer.adopt).
        const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true });
        server.maxConnections = 65_000;
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: address, port: 0, backlog: 4096, ipv6Only: family === 6 }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        server.on('connection', (socket) => l.accepted(socket));
        server.on('error', (e) => log.warn('the VIF listener failed', { error: e.message }));
        l.servers.set(family, server);
        l.ports[family] = (server.address() as net.AddressInfo).port;
      }
    } catch (e) {
      l.stop();
      throw e;
    }
    return l;
  }

  /** A client's SYN arrived for a new flow: dial its destination, then tell the packet side. */
  open(flow: OpenedFlow): void {
    const id = {
      protocol: PROTO_TCP,
      srcIp: flow.clientIp,
      srcPort: flow.clientPort,
      dstIp: flow.targetIp,
      dstPort: flow.targetPort,
    };
    const label = `tcp ${flow.clientIp}:${flow.clientPort} -> ${flow.targetIp}:${flow.targetPort}`;
    this.dialer.dialTcp(id).then(
      (dial) => {
        if (this.stopped) {
          dial.abandon('tp is disconnecting');
          return;
        }
        const fake = `${flow.fakeIp}|${flow.fakePort}`;
        const timer = setTimeout(() => {
          // The client gave up before the handshake completed (it answered the SYN-ACK with RST).
          this.pending.delete(fake);
          dial.abandon('the client did not complete the connection');
          this.nat.abandoned(flow.key);
        }, ACCEPT_TIMEOUT_MS);
        this.pending.set(fake, { key: flow.key, dial, timer });
        this.nat.dialed(flow.key);
      },
      (e: Error) => {
        this.dialsRejected++;
        if (e instanceof DialRejectedError)
          this.log.debug('dial rejected', { flow: label, reason: e.message });
        else this.log.warn('dial failed', { flow: label, error: e.message });
        this.nat.rejected(flow.key);
      },
    );
  }

  private accepted(accepted: net.Socket): void {
    const fake = `${accepted.remoteAddress}|${accepted.remotePort}`;
    const p = this.pending.get(fake);
    if (!p) {
      // A local process connected to the listener directly, or a flow that timed out: not ours.
      accepted.resetAndDestroy();
      return;
    }
    clearTimeout(p.timer);
    this.pending.delete(fake);
    const socket = this.dialer.adopt?.(accepted) ?? accepted;
    this.sockets.add(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.nat.closed(p.key);
    });
    p.dial.attach(socket);
  }

  get openConnections(): number {
    return this.sockets.size;
  }

  /** Closes the listeners, resets every connection, abandons dials in flight. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const s of this.servers.values()) s.close();
    for (const s of this.sockets) s.resetAndDestroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.dial.abandon('tp is disconnecting');
    }
    this.pending.clear();
  }
}
