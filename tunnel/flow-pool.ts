// Flow connections kept ready for the next flow (tunnel/framed-call.ts): those handed back after a flow
// ended cleanly, else a spare opened ahead of need. Opening one costs a round trip or more (a TCP
// handshake; through a port-forward, the kubelet's stream set-up and its dial of the pod: ~1 ms on the lab),
// which a flow taken from here does not pay.
//
// A ready connection is watched: its far side ending it (the peer restarted, a port-forward closed) or
// closing it drops it at once, and one unused for `maxIdleMs` is closed (well within the 60 s the far side
// waits for a flow's OPEN). Bytes that arrive while it waits (a late CREDIT of the flow before) are kept
// and put back for the next flow's call.
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../logging/logger.js';
import { formatHostPort } from '../netaddr/parse.js';
import { FLOW_MAGIC, type FlowWindowGroup, FramedCall } from './framed-call.js';
import { ReadSwitch } from './read-switch.js';
import { TunnelStream } from './stream.js';

/** How long a ready connection may wait for a flow. */
export const READY_MAX_IDLE_MS = 20_000;
/**
 * How long the accepting side of a flow connection (an agent's direct port, the manager's port) waits for
 * a flow's OPEN: well past READY_MAX_IDLE_MS, so a connection kept ready is not closed under its client.
 */
export const FLOW_OPEN_TIMEOUT_MS = 60_000;

export interface FlowPoolOptions<T extends Duplex> {
  /** Opens a new connection, its FLOW_MAGIC written. */
  connect(): Promise<T>;
  /** What the connections go to, for logs. */
  what: string;
  log: Logger;
  /** Keep one connection ready ahead of need (default true). */
  spare?: boolean;
  /**
   * Whether a ready connection suits a new flow now (default: all do); one that does not is closed instead of
   * handed out (PodStreams: its port-forward carries a transfer in bulk, behind which the flow would wait,
   * or takes no new stream since the kubelet failed one of its streams).
   */
  suits?(connection: T): boolean;
  maxIdleMs?: number;
  /** The group whose windows the flows take (framed-call.ts FlowWindowGroup), shared by a process's pools. */
  windows?: FlowWindowGroup;
}

interface Ready<T> {
  connection: T;
  /** Stops watching it; the bytes that arrived meanwhile. */
  take(): Buffer[];
}

/**
 * A connection from the pool. `waited`: it was ready before this flow (handed back, or the spare), so its far
 * side may have closed it a moment ago, unseen yet: a flow that fails before its far side answered may try
 * once more on a fresh one.
 */
export interface PooledConnection<T> {
  connection: T;
  waited: boolean;
}

export class FlowConnectionPool<T extends Duplex> {
  /** Newest last. */
  private readonly ready: Ready<T>[] = [];
  private sparing = false;
  private closed = false;

  constructor(private readonly o: FlowPoolOptions<T>) {}

  /** What the connections go to (logs, a flow's peer). */
  get what(): string {
    return this.o.what;
  }

  /** A connection for one flow: the newest ready one, else a new one; rejects when none can be opened. */
  async open(): Promise<PooledConnection<T>> {
    const taken = this.take();
    const pooled = taken ?? { connection: await this.fresh(), waited: false };
    this.keepSpare();
    return pooled;
  }

  /** A new connection, not from the ready ones (a retry after a reused one turned out stale). */
  async fresh(): Promise<T> {
    if (this.closed) throw new Error(`the flow connections to ${this.o.what} were closed`);
    return this.o.connect();
  }

  /**
   * A flow's stream on `connection` (from open()): the connection comes back here once the flow ended
   * cleanly. `peerTakesWindows`: the far side said it takes WINDOW frames (framed-call.ts).
   */
  flowStream(connection: T, peer: string, peerTakesWindows = false): TunnelStream {
    const call = new FramedCall(connection, peer, {
      reusable: true,
      windows: this.o.windows,
      peerTakesWindows,
    });
    call.once('reusable', () => this.release(connection));
    return new TunnelStream(call);
  }

  /** A connection whose flow ended cleanly (FramedCall 'reusable'): ready for the next open(). */
  release(connection: T): void {
    if (this.closed || !usable(connection)) connection.destroy();
    else this.keep(connection);
  }

  /** Opens the spare ahead of the first flow. */
  warm(): void {
    this.keepSpare();
  }

  close(): void {
    this.closed = true;
    for (const r of this.ready.splice(0)) {
      r.take();
      r.connection.destroy();
    }
  }

  /** Connections ready now (tests, status). */
  get readyCount(): number {
    return this.ready.length;
  }

  private take(): PooledConnection<T> | undefined {
    for (let r = this.ready.pop(); r; r = this.ready.pop()) {
      const held = r.take();
      if (!usable(r.connection) || this.o.suits?.(r.connection) === false) {
        r.connection.destroy();
        continue;
      }
      // The flow's call resumes it and reads these first.
      for (let i = held.length - 1; i >= 0; i--) r.connection.unshift(held[i]);
      return { connection: r.connection, waited: true };
    }
    return undefined;
  }

  private keep(connection: T): void {
    const held: Buffer[] = [];
    const drop = (reopen: boolean) => {
      const i = this.ready.indexOf(entry);
      if (i < 0) return;
      this.ready.splice(i, 1);
      entry.take();
      connection.destroy();
      if (reopen) this.keepSpare();
    };
    const hold = (chunk: Buffer) => held.push(chunk);
    // Unused for long, or its far side ended: replaced if it was the last. Closed: the next open() opens one.
    const expire = () => drop(true);
    const closed = () => drop(false);
    const timer = setTimeout(expire, this.o.maxIdleMs ?? READY_MAX_IDLE_MS);
    timer.unref();
    // 'remote-end': a port-forward's stream whose pod side ended (announced even while nothing reads).
    const watch: [string, (arg: Buffer) => void][] = [
      ['data', hold],
      ['end', expire],
      ['remote-end', expire],
      ['error', ignore],
      ['close', closed],
    ];
    for (const [event, handler] of watch) connection.on(event, handler);
    connection.resume();
    const entry: Ready<T> = {
      connection,
      take: () => {
        clearTimeout(timer);
        connection.pause();
        for (const [event, handler] of watch) connection.off(event, handler);
        return held.splice(0);
      },
    };
    this.ready.push(entry);
  }

  /** Opens a spare when no connection is ready. */
  private keepSpare(): void {
    if (this.o.spare === false || this.closed || this.ready.length > 0 || this.sparing) return;
    this.sparing = true;
    this.fresh().then(
      (connection) => {
        this.sparing = false;
        if (this.closed) connection.destroy();
        else this.keep(connection);
      },
      (e: Error) => {
        this.sparing = false;
        this.o.log.debug('no spare flow connection', { to: this.o.what, reason: e.message });
      },
    );
  }
}

/** A connection's errors while it waits: it is dropped (its 'close' follows). */
function ignore(): void {}

/** A connection a new flow can start on: open both ways (a port-forward's stream also says when its pod side ended). */
function usable(c: Duplex): boolean {
  return (
    !c.destroyed &&
    !c.writableEnded &&
    !c.readableEnded &&
    !(c as Duplex & { remoteEnded?: boolean }).remoteEnded
  );
}

/**
 * A flow connection over TCP to host:port, FLOW_MAGIC written. Created with a ReadSwitch, so that each
 * flow's call reads large messages straight into their memory (framed-call.ts).
 */
export function connectFlowSocket(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const reads = new ReadSwitch();
    const socket = net.connect({ host, port, noDelay: true, onread: reads });
    reads.attach(socket);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.write(FLOW_MAGIC);
      resolve(socket);
    });
  });
}

/** Flow connections over TCP to host:port, one kept ready ahead of need. */
export function tcpFlowPool(
  host: string,
  port: number,
  log: Logger,
  windows?: FlowWindowGroup,
): FlowConnectionPool<net.Socket> {
  return new FlowConnectionPool({
    connect: () => connectFlowSocket(host, port),
    what: formatHostPort(host, port),
    log,
    windows,
  });
}
