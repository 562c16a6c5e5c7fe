// Two connected in-memory duplex ends: the personal-intercept router hands one to node:http / node:http2
// as the "socket" of a connection to a workstation, and tunnel/flow.ts pumps the other through a tunnel
// stream. No loopback socket, no extra system calls. Each end passes the other's backpressure on (a write
// waits until the peer's reader takes the data), carries end() as EOF and destroy() as a reset.
import { Duplex } from 'node:stream';

class PairEnd extends Duplex {
  peer!: PairEnd;
  /** The callback of a write the peer's reader has not taken yet. */
  private blockedWrite: (() => void) | undefined;

  constructor(allowHalfOpen: boolean) {
    super({ allowHalfOpen });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.peer.destroyed) callback(new Error('the flow is closed'));
    else if (this.peer.push(chunk)) callback();
    else this.peer.blockedWrite = callback;
  }

  override _read(): void {
    const resume = this.blockedWrite;
    this.blockedWrite = undefined;
    resume?.();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(null);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const resume = this.blockedWrite;
    this.blockedWrite = undefined;
    resume?.();
    if (!this.peer.destroyed) this.peer.destroy(error ?? undefined);
    callback(error);
  }

  // What node:http, node:http2 and tunnel/flow.ts call on a net.Socket; meaningless in memory.
  setKeepAlive(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setTimeout(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
  resetAndDestroy(): this {
    return this.destroy(new Error('reset'));
  }
}

/**
 * A connected pair: what one end writes, the other reads. The first end is the one node:http or node:http2
 * holds: like a net.Socket without allowHalfOpen it ends itself when the far side ended, so a keep-alive
 * pool drops a connection the workstation's app closed while idle (an `end` alone leaves it in the pool,
 * and the next request would be written into a closed flow). The second end, the tunnel flow's, carries
 * half-closes as they come.
 */
export function socketPair(): [PairEnd, PairEnd] {
  const a = new PairEnd(false);
  const b = new PairEnd(true);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
