// The Watch* streams: each watcher gets the whole current snapshot first, then again after every change
// that alters what it sees. Changes in one loop turn are folded into one round of snapshots.
import { type ServerWritableStream, status } from '@grpc/grpc-js';

/** Thrown by a watcher's snapshot function when its session is gone: the stream ends with NOT_FOUND. */
export class WatcherGone extends Error {}

interface Watcher {
  call: ServerWritableStream<unknown, unknown>;
  snapshot: () => unknown;
  encode: (value: never) => Uint8Array;
  last: Buffer | undefined;
}

export class SnapshotFeeds {
  private readonly watchers = new Set<Watcher>();
  private scheduled = false;

  /** Starts sending snapshots on a server stream until the client cancels or the session goes away. */
  watch<T>(
    call: ServerWritableStream<unknown, T>,
    snapshot: () => T,
    encode: (value: T) => Uint8Array,
  ): void {
    const w: Watcher = {
      call: call as ServerWritableStream<unknown, unknown>,
      snapshot,
      encode,
      last: undefined,
    };
    this.watchers.add(w);
    const drop = () => this.watchers.delete(w);
    call.on('cancelled', drop);
    call.on('close', drop);
    call.on('error', drop);
    this.send(w);
  }

  /** Something changed: recompute every watcher's snapshot (once per loop turn). */
  changed(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      for (const w of this.watchers) this.send(w);
    });
  }

  /** Ends every stream (shutdown). */
  closeAll(): void {
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  private send(w: Watcher): void {
    let value: unknown;
    try {
      value = w.snapshot();
    } catch (e) {
      this.watchers.delete(w);
      if (e instanceof WatcherGone) w.call.emit('error', { code: status.NOT_FOUND, details: e.message });
      else w.call.emit('error', { code: status.INTERNAL, details: (e as Error).message });
      return;
    }
    const bytes = Buffer.from((w.encode as (v: unknown) => Uint8Array)(value));
    if (w.last?.equals(bytes)) return;
    w.last = bytes;
    w.call.write(value);
  }
}
