// Tunnel streams opened ahead of need. A gRPC call costs CPU at both ends before its first message (grpc-js
// and Node's HTTP/2: 650-730 us for a one-message bidi call, client and server in one process, on the lab's
// VM), and every new intercepted or outbound connection paid it on its critical path: at the agent and the
// manager, then at the user daemon and the manager again. A spare is a Tunnel call started early and left
// idle; the next flow takes one and sends its OPEN at once, and a new spare is started after that flow is on
// its way (setImmediate), off the critical path.
//
// A spare carries SPARE_METADATA (its session id): the manager verifies the session's credential on the
// spot and waits SPARE_OPEN_TIMEOUT_MS for its OPEN instead of 10 s (manager/tunnel-router.ts). Spares are
// replaced when they reach maxAgeMs (below that timeout). One made on another channel or for another session
// (a reconnect, a new arrival) is never handed out: it is cancelled. A spare that fails (the manager went
// away) is dropped and not replaced until the next take(), so a manager that is down sees no loop of calls.
import { Metadata } from '@grpc/grpc-js';
import type { FlowWindows } from '../rpc/grpc-options.js';
import type { ManagerClient } from '../rpc/manager-service.js';
import { TunnelStream } from './stream.js';

/** The call metadata that marks a spare Tunnel stream; its value is the session id. */
export const SPARE_METADATA = 'tp-spare-session';
/** How long the manager waits for a spare's OPEN (a stream without the mark: 10 s). */
export const SPARE_OPEN_TIMEOUT_MS = 60_000;

export interface SpareStreamOptions {
  /** Spares kept ready: a burst of this many new connections pays no call setup. */
  spares: number;
  /** A spare older than this is cancelled and replaced (below SPARE_OPEN_TIMEOUT_MS). */
  maxAgeMs: number;
}

const DEFAULTS: SpareStreamOptions = { spares: 2, maxAgeMs: 45_000 };

interface Spare {
  stream: TunnelStream;
  client: ManagerClient;
  sessionId: string;
  born: number;
  timer: NodeJS.Timeout;
  gone: () => void;
}

export class SpareStreams {
  private spares: Spare[] = [];
  /** Where spares are made: the channel and session of the last take(). */
  private target: { client: ManagerClient; sessionId: string } | undefined;
  private refill: NodeJS.Immediate | undefined;
  private closed = false;
  private readonly o: SpareStreamOptions;

  constructor(
    private readonly windows: FlowWindows,
    options: Partial<SpareStreamOptions> = {},
  ) {
    this.o = { ...DEFAULTS, ...options };
  }

  /** Spares ready now (for tests and logs). */
  get ready(): number {
    return this.spares.length;
  }

  /**
   * A stream for a new flow on `client` for `sessionId`: a spare when one is ready, else a new call. Spares
   * for the next flows are started after this one is under way.
   */
  take(client: ManagerClient, sessionId: string): TunnelStream {
    let taken: TunnelStream | undefined;
    while (!taken && this.spares.length > 0) {
      const s = this.spares.shift()!;
      this.release(s);
      const usable =
        s.client === client &&
        s.sessionId === sessionId &&
        s.stream.ending === undefined &&
        Date.now() - s.born < this.o.maxAgeMs;
      if (usable) taken = s.stream;
      else s.stream.abort('a spare tunnel stream no longer needed');
    }
    if (sessionId && !this.closed) {
      this.target = { client, sessionId };
      this.scheduleRefill();
    }
    return taken ?? TunnelStream.open(client, this.windows);
  }

  /** Cancels every spare and makes no more (the session or the channel ends). */
  close(): void {
    this.closed = true;
    this.clear();
  }

  /** Cancels every spare; take() starts making them again. */
  clear(): void {
    if (this.refill) clearImmediate(this.refill);
    this.refill = undefined;
    this.target = undefined;
    for (const s of this.spares.splice(0)) {
      this.release(s);
      s.stream.abort('a spare tunnel stream no longer needed');
    }
  }

  private scheduleRefill(): void {
    if (this.refill) return;
    this.refill = setImmediate(() => {
      this.refill = undefined;
      const t = this.target;
      if (!t || this.closed) return;
      while (this.spares.length < this.o.spares) this.add(t.client, t.sessionId);
    });
  }

  private add(client: ManagerClient, sessionId: string): void {
    const metadata = new Metadata();
    metadata.set(SPARE_METADATA, sessionId);
    const stream = TunnelStream.open(client, this.windows, metadata);
    const spare: Spare = {
      stream,
      client,
      sessionId,
      born: Date.now(),
      // Replaced when old, for as long as flows still come for this channel and session.
      timer: setTimeout(() => {
        this.drop(spare);
        stream.abort('a spare tunnel stream reached its age');
        const t = this.target;
        if (t && t.client === client && t.sessionId === sessionId) this.scheduleRefill();
      }, this.o.maxAgeMs),
      // Failed or ended by the manager: dropped, not replaced (the next take() starts new ones).
      gone: () => this.drop(spare),
    };
    spare.timer.unref();
    stream.once('failure', spare.gone);
    stream.once('peer-end', spare.gone);
    this.spares.push(spare);
  }

  private drop(spare: Spare): void {
    const i = this.spares.indexOf(spare);
    if (i >= 0) this.spares.splice(i, 1);
    this.release(spare);
  }

  private release(spare: Spare): void {
    clearTimeout(spare.timer);
    spare.stream.off('failure', spare.gone);
    spare.stream.off('peer-end', spare.gone);
  }
}
