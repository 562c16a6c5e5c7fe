// A tunnel flow's stream on a byte stream of its own instead of a gRPC call: one TCP connection to the
// agent's direct port, or one SPDY stream of a port-forward to it (kube/port-forward.ts PodStreams). The
// flow code runs unchanged on it (TunnelStream wraps it as it wraps a call), but no HTTP/2 is in between:
// on the intercept's path through the API server that was a third of the CPU of every round trip and
// ~3.4 ms per MiB (docs/kubernetes.md).
//
// The opener writes FLOW_MAGIC, then both sides write frames of a 5-byte header (type, length) and a body:
//
//   MESSAGE  a TunnelMessage (rpc/tunnel-codec.ts); its header is laid out like gRPC's frame (flag 0 and
//            the length), so a DATA message read straight into its frame (rpc/grpc-framing.ts) goes out
//            without a copy
//   CREDIT   u32: the receiver has taken that many bytes of MESSAGE frames (header included) off the wire
//   END      this side sends nothing more (the call's half-close); the byte stream closes after both
//   CANCEL   utf-8 reason: this side gives the flow up (the call's cancel)
//   WINDOW   u32: the peer may have that many bytes of MESSAGE frames outstanding to this side from now on
//            (sent only to a peer known to take it: an agent's direct watch says so with the metadata key
//            FLOW_WINDOWS_METADATA, the manager with ClusterInfo.flow_windows; below)
//
// Flow control is per flow, the way HTTP/2's stream windows were: a side sends MESSAGE frames while the
// peer has credited all but its window of them (WINDOW_BYTES until the peer sets one), and credits what
// its consumer took. A port-forward's SPDY streams share one connection and neither the kubelet nor
// containerd honour SPDY's windows, so a reader that stops reading must not make the connection stop:
// with the window its flow's sender stops instead, and the others go on.
//
// The window a flow needs depends on what shares its way. A flow's rate is at most its window per round
// trip, and through the API server, the kubelet and the runtime that round trip is 10-20 ms under a bulk
// load: 2 MiB holds a download at ~150 MiB/s where 8 MiB lets it reach the port-forward's own rate. But
// every byte a flow has in flight is a byte the others' answers wait behind, and CPU the two cores spend
// on it: with 8 MiB, the requests beside a download took 3 times as long (docs/kubernetes.md). So the
// workstation, which opens the flow connections and sees all its flows, sets the window of each
// (FlowWindowGroup): LONE_WINDOW_BYTES both ways while a flow is its only one, WINDOW_BYTES as soon as
// another starts. It sends WINDOW at the start of every flow to a peer that said it takes them (an agent's
// watch metadata FLOW_WINDOWS_METADATA, the manager's ClusterInfo.flow_windows);
// the accepting side answers a flow's first WINDOW with its own, LONE_WINDOW_BYTES, and the workstation
// sends within the smaller of that and its own. Older peers never see the frame and keep WINDOW_BYTES.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { frameOf, HEADER_BYTES } from '../rpc/grpc-framing.js';
import {
  adoptJoined,
  deserializeTunnelMessage,
  joinMemory,
  serializeTunnelMessage,
} from '../rpc/tunnel-codec.js';
import type { OnRead } from './dial.js';
import { MAX_DATA_BYTES, type TunnelMessage } from './messages.js';
import { type ReadSwitch, readSwitchOf } from './read-switch.js';

/**
 * The metadata an agent's direct watch answers with when its port takes flow connections (an older agent's
 * does not, and the workstation keeps to Tunnel calls with it).
 */
export const FLOW_CONNECTIONS_METADATA = 'tp-flow-connections';
/** The first bytes on a flow's byte stream, from the side that opened it. */
export const FLOW_MAGIC = Buffer.from('TPF1\n');

/** Whether a connection's first bytes agree with FLOW_MAGIC as far as they go (it may be a flow connection). */
export function agreesWithFlowMagic(first: Buffer): boolean {
  const n = Math.min(first.length, FLOW_MAGIC.length);
  return first.subarray(0, n).equals(FLOW_MAGIC.subarray(0, n));
}
/** Bytes of MESSAGE frames a side may have sent and not yet had credited, until the peer sets its window. */
export const WINDOW_BYTES = 2 << 20;
/** The window of a workstation's only flow, and the one an accepting side grants (see above). */
export const LONE_WINDOW_BYTES = 8 << 20;
/**
 * The metadata ('1') an agent's direct watch answers with when its flow connections also take WINDOW frames:
 * a key of its own, so that a workstation from before them still reads FLOW_CONNECTIONS_METADATA's '1'.
 */
export const FLOW_WINDOWS_METADATA = 'tp-flow-windows';
/**
 * The smallest window a WINDOW frame may set (below: a malformed frame); a side sends at most
 * LONE_WINDOW_BYTES ahead whatever the peer allows (its own memory: what it sent sits in its write buffers).
 */
const MIN_WINDOW_BYTES = 256 << 10;
/** A receiver credits once it has taken this many bytes (or all it holds when it pauses). */
const CREDIT_BATCH_BYTES = 256 << 10;
/** The largest frame body accepted: a DATA message of MAX_DATA_BYTES and its few bytes of fields. */
const MAX_BODY_BYTES = MAX_DATA_BYTES + 1024;

const T_MESSAGE = 0;
const T_CREDIT = 1;
const T_END = 2;
const T_CANCEL = 3;
const T_WINDOW = 4;

/** A CREDIT or WINDOW frame: the header and its u32 body in one buffer. */
function u32Frame(type: number, value: number): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_BYTES + 4);
  frame[0] = type;
  frame.writeUInt32BE(4, 1);
  frame.writeUInt32BE(value, HEADER_BYTES);
  return frame;
}

function header(type: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h[0] = type;
  h.writeUInt32BE(length, 1);
  return h;
}

/** How long a closed byte stream may wait for the peer's side to close too. */
const CLOSE_GRACE_MS = 5_000;

function cancelFrame(reason: string): Buffer {
  const why = Buffer.from(reason.slice(0, 200));
  return Buffer.concat([header(T_CANCEL, why.length), why]);
}

/**
 * Where the reads of a byte stream whose reads a call takes (below) land when no large message is being
 * read: copied out at once, so one buffer serves every call.
 */
const SCRATCH_BYTES = 64 << 10;
let scratch: Buffer | undefined;

/** A large MESSAGE frame read straight into its memory: `at` of its `n` bytes (header included) are in. */
interface Filling {
  memory: Buffer;
  at: number;
  n: number;
}

interface Outgoing {
  frames: Buffer[];
  cost: number;
  written?: (error?: Error | null) => void;
}

export interface FramedCallOptions {
  /** Hand the byte stream on once both sides ended ('reusable'), instead of closing it. */
  reusable?: boolean;
  /** The opener's flows that share a way (their windows, FlowWindowGroup). */
  windows?: FlowWindowGroup;
  /** The peer takes WINDOW frames (it said so: FLOW_WINDOWS_METADATA, ClusterInfo.flow_windows). */
  peerTakesWindows?: boolean;
}

/**
 * The flows a workstation process opens, which share its way to the cluster (the port-forwards, the API
 * server, its CPU): while one flow is the only one it gets LONE_WINDOW_BYTES both ways, and as soon as there
 * are more each gets WINDOW_BYTES, so none waits behind another's bulk (see the top of this file).
 */
export class FlowWindowGroup {
  private readonly calls = new Set<FramedCall>();

  /** Flows open now (tests, status). */
  get size(): number {
    return this.calls.size;
  }

  /** The window of each flow now. */
  get window(): number {
    return this.calls.size <= 1 ? LONE_WINDOW_BYTES : WINDOW_BYTES;
  }

  join(call: FramedCall): void {
    const was = this.window;
    this.calls.add(call);
    if (this.window === was) call.setWindow(was);
    else this.apply();
  }

  leave(call: FramedCall): void {
    const was = this.window;
    if (this.calls.delete(call) && this.window !== was) this.apply();
  }

  private apply(): void {
    const window = this.window;
    for (const c of this.calls) c.setWindow(window);
  }
}

/** The error a FramedCall emits, shaped like grpc-js's (TunnelStream reads `details`). */
function callError(details: string): Error & { details: string } {
  return Object.assign(new Error(details), { details });
}

/**
 * The call interface TunnelStream uses, on a byte stream. Events as a grpc-js call's: 'data' (a
 * TunnelMessage), 'end' (the peer's half-close), 'error' (with `details`: the flow failed or the peer
 * cancelled it; a byte stream that closes before both sides ended is a failure); with `reusable`,
 * 'reusable' (the byte stream, free for the next flow's call, once both sides ended).
 */
export class FramedCall extends EventEmitter {
  /** A write's callback runs once the byte stream took the frame: nothing keeps the message after it. */
  readonly writesAreFinal = true;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly inbox: { m: TunnelMessage; cost: number }[] = [];
  private paused = false;
  private uncredited = 0;
  private outstanding = 0;
  private readonly outbox: Outgoing[] = [];
  private endQueued = false;
  private sentEnd = false;
  private gotEnd = false;
  private over = false;
  /** The peer's window (its WINDOW frame), this side's own (setWindow), and the last one told to the peer. */
  private peerWindow = WINDOW_BYTES;
  private ownWindow = Number.POSITIVE_INFINITY;
  private toldWindow = 0;
  /**
   * The byte stream's reads, when it is a socket created with a ReadSwitch (tunnel/flow-pool.ts
   * connectFlowSocket): the rest of a large MESSAGE frame is read straight into the memory it is delivered
   * in (joinMemory), instead of socket reads of 64 KiB each joined into it, a copy and an allocation per
   * read. What else is read lands in one scratch buffer and is copied out.
   */
  private readonly reads: ReadSwitch | undefined;
  private filling: Filling | undefined;
  /** The memory this call offered for the stream's next read. */
  private offered: Uint8Array | undefined;
  private readonly frameReads: OnRead = {
    buffer: () => {
      const f = this.filling;
      scratch ??= Buffer.allocUnsafe(SCRATCH_BYTES);
      this.offered = f ? f.memory.subarray(f.at, f.n) : scratch;
      return this.offered;
    },
    callback: (bytes, into) => {
      if (this.over) return true;
      if (this.filling && into === this.offered) this.filled(bytes);
      else this.received(Buffer.from(into.subarray(0, bytes)));
      return true;
    },
  };

  private readonly handlers: Record<'data' | 'end' | 'error' | 'close', (arg?: unknown) => void> = {
    data: (chunk) => this.received(chunk as Buffer),
    end: () => {
      if (!this.gotEnd) this.fail('the connection ended in the middle of the flow');
    },
    error: (e) => this.fail(`the connection failed: ${(e as Error).message}`),
    close: () => this.fail('the connection closed'),
  };

  constructor(
    private readonly bytes: Duplex,
    private readonly peer: string,
    private readonly options: FramedCallOptions = {},
  ) {
    super();
    for (const [event, handler] of Object.entries(this.handlers)) bytes.on(event, handler);
    // Reads from now on come here; what the stream already holds (bytes put back by the call before, or
    // by the pool) comes first, as 'data' once it resumes, before any read: I/O waits for the next turn.
    this.reads = readSwitchOf(bytes);
    this.reads?.to(this.frameReads);
    // A byte stream handed on by a call before this one was paused (see reusable).
    bytes.resume();
    options.windows?.join(this);
  }

  /** Opens the stream on `bytes` (the opener's side): writes FLOW_MAGIC first. */
  static open(bytes: Duplex, peer: string, options: FramedCallOptions = {}): FramedCall {
    bytes.write(FLOW_MAGIC);
    return new FramedCall(bytes, peer, options);
  }

  /** What this side may have outstanding now: the peer's window, within this side's own (its group's). */
  get sendWindow(): number {
    return Math.min(this.peerWindow, this.ownWindow);
  }

  /**
   * This flow's window both ways (FlowWindowGroup): the peer is told when it takes WINDOW frames (the first
   * time in any case, which is how it learns that this side takes them too), and this side sends within it.
   */
  setWindow(bytes: number): void {
    if (this.over) return;
    this.ownWindow = bytes;
    if (this.options.peerTakesWindows && bytes !== this.toldWindow) this.tellWindow(bytes);
    this.flush();
  }

  write(m: TunnelMessage, written?: (error?: Error | null) => void): boolean {
    if (this.endQueued || this.over) {
      queueMicrotask(() => written?.(new Error('the flow stream has ended')));
      return false;
    }
    const body = serializeTunnelMessage(m);
    const frame = frameOf(body);
    const frames = frame ? [frame] : [header(T_MESSAGE, body.length), body];
    this.outbox.push({ frames, cost: HEADER_BYTES + body.length, written });
    this.flush();
    return true;
  }

  /** This side sends nothing more (after what is queued). */
  end(): void {
    if (this.endQueued || this.over) return;
    this.endQueued = true;
    this.flush();
  }

  /** Gives the flow up: tells the peer, closes the byte stream. */
  cancel(reason = 'cancelled'): void {
    if (this.over) return;
    this.finish();
    this.closeWith(cancelFrame(reason));
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    while (!this.paused && this.inbox.length > 0) {
      const { m, cost } = this.inbox.shift()!;
      this.deliver(m, cost);
    }
    if (!this.paused && this.gotEnd && this.inbox.length === 0) this.emit('end');
  }

  getPeer(): string {
    return this.peer;
  }

  private flush(): void {
    while (this.outbox.length > 0 && !this.over) {
      const next = this.outbox[0]!;
      // The receiver credits in batches: while less than a batch is outstanding no credit may come, so a
      // message goes then whatever its size (at most a batch and one message are ever in flight past the
      // window).
      if (this.outstanding >= CREDIT_BATCH_BYTES && this.outstanding + next.cost > this.sendWindow) return;
      this.outbox.shift();
      this.outstanding += next.cost;
      const last = next.frames.length - 1;
      for (let i = 0; i < last; i++) this.bytes.write(next.frames[i]);
      this.bytes.write(next.frames[last], next.written);
    }
    if (this.endQueued && !this.sentEnd && this.outbox.length === 0 && !this.over) {
      this.sentEnd = true;
      this.bytes.write(header(T_END, 0));
      this.closeIfDone();
    }
  }

  private received(chunk: Buffer): void {
    if (this.over) return;
    const f = this.filling;
    if (f) {
      // Bytes the stream held before its reads came here (put back by the call before) go on the frame.
      const k = Math.min(chunk.length, f.n - f.at);
      f.memory.set(chunk.subarray(0, k), f.at);
      this.filled(k);
      if (k === chunk.length) return;
      chunk = chunk.subarray(k);
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    while (this.pendingBytes >= HEADER_BYTES && !this.over) {
      let head = this.pending[0]!;
      if (head.length < HEADER_BYTES) head = this.gather(HEADER_BYTES);
      const type = head[0]!;
      const length = head.readUInt32BE(1);
      if (
        type > T_WINDOW ||
        length > MAX_BODY_BYTES ||
        ((type === T_CREDIT || type === T_WINDOW) && length !== 4)
      ) {
        this.fail(`malformed flow frame (type ${type}, ${length} bytes)`, true);
        return;
      }
      const n = HEADER_BYTES + length;
      if (this.pendingBytes < n) {
        // The rest of a large message is read straight into its memory (`reads`).
        const memory = type === T_MESSAGE && this.reads ? joinMemory(n) : undefined;
        if (memory) this.filling = { memory, at: this.takeInto(this.pendingBytes, memory).length, n };
        return;
      }
      // A message that came in pieces is joined into pooled memory when it is large (a bulk transfer's).
      const memory = type === T_MESSAGE && this.pending[0]!.length < n ? joinMemory(n) : undefined;
      const frame = memory ? this.takeInto(n, memory) : this.take(n);
      this.frame(type, frame.subarray(HEADER_BYTES), memory);
    }
  }

  /** `bytes` more of the frame being filled are in: delivered once it is whole. */
  private filled(bytes: number): void {
    const f = this.filling!;
    f.at += bytes;
    if (f.at < f.n) return;
    this.filling = undefined;
    this.frame(T_MESSAGE, f.memory.subarray(HEADER_BYTES, f.n), f.memory);
  }

  /** Removes the next `n` bytes (n ≤ pendingBytes), copied to the start of `memory`. */
  private takeInto(n: number, memory: Buffer): Buffer {
    let o = 0;
    while (o < n) {
      const c = this.pending[0]!;
      const k = Math.min(c.length, n - o);
      memory.set(k === c.length ? c : c.subarray(0, k), o);
      o += k;
      if (k === c.length) this.pending.shift();
      else this.pending[0] = c.subarray(k);
    }
    this.pendingBytes -= n;
    return memory.subarray(0, n);
  }

  /** Joins the first chunks so that the first holds at least `n` bytes (n ≤ pendingBytes). */
  private gather(n: number): Buffer {
    let have = 0;
    let count = 0;
    while (have < n) have += this.pending[count++]!.length;
    const joined = Buffer.concat(this.pending.splice(0, count));
    this.pending.unshift(joined);
    return joined;
  }

  /** Removes the next `n` bytes; a view of the first chunk when it holds them all (no copy). */
  private take(n: number): Buffer {
    let first = this.pending[0]!;
    if (first.length < n) first = this.gather(n);
    this.pendingBytes -= n;
    if (first.length === n) this.pending.shift();
    else this.pending[0] = first.subarray(n);
    return first.subarray(0, n);
  }

  private frame(type: number, body: Buffer, memory?: Buffer): void {
    switch (type) {
      case T_MESSAGE: {
        let m: TunnelMessage;
        try {
          m = deserializeTunnelMessage(body);
        } catch (e) {
          this.fail(`malformed flow message: ${(e as Error).message}`, true);
          return;
        }
        if (memory) adoptJoined(m, memory);
        const cost = HEADER_BYTES + body.length;
        if (this.paused || this.inbox.length > 0) this.inbox.push({ m, cost });
        else this.deliver(m, cost);
        return;
      }
      case T_CREDIT:
        this.outstanding = Math.max(0, this.outstanding - body.readUInt32BE(0));
        this.flush();
        return;
      case T_WINDOW: {
        const window = body.readUInt32BE(0);
        if (window < MIN_WINDOW_BYTES) {
          this.fail(`malformed flow frame (a window of ${window} bytes)`, true);
          return;
        }
        this.peerWindow = Math.min(window, LONE_WINDOW_BYTES);
        // The opener takes WINDOW frames: an accepting side that has not set a window answers with its grant.
        if (this.toldWindow === 0) this.tellWindow(LONE_WINDOW_BYTES);
        this.flush();
        return;
      }
      case T_END:
        if (this.gotEnd) return;
        this.gotEnd = true;
        if (!this.paused && this.inbox.length === 0) this.emit('end');
        this.closeIfDone();
        return;
      default:
        this.fail(`the peer cancelled the flow: ${body.toString('utf8')}`);
    }
  }

  private deliver(m: TunnelMessage, cost: number): void {
    this.uncredited += cost;
    if (this.uncredited >= CREDIT_BATCH_BYTES) {
      const credit = u32Frame(T_CREDIT, this.uncredited);
      this.uncredited = 0;
      if (!this.over) this.bytes.write(credit);
    }
    this.emit('data', m);
  }

  /**
   * Both sides have ended: the byte stream closes, or with `reusable` it is handed on ('reusable' event):
   * paused, these listeners gone, any bytes already read of what follows put back. The next flow's call
   * takes it from there, as HTTP/2 takes a new stream on a connection it keeps: a new connection then
   * costs no new port-forward stream (the kubelet's work and the pod's dial).
   */
  private closeIfDone(): void {
    if (!this.sentEnd || !this.gotEnd || this.over) return;
    this.finish();
    if (!this.options.reusable || this.bytes.destroyed) {
      this.closeWith();
      return;
    }
    this.bytes.pause();
    for (const [event, handler] of Object.entries(this.handlers)) this.bytes.off(event, handler);
    // Reads go to the stream again; a frame begun after both ENDs (none should be) goes back with the rest.
    this.reads?.to(undefined);
    if (this.filling) {
      this.pending.unshift(this.filling.memory.subarray(0, this.filling.at));
      this.pendingBytes += this.filling.at;
      this.filling = undefined;
    }
    if (this.pendingBytes > 0) this.bytes.unshift(Buffer.concat(this.pending.splice(0)));
    this.pendingBytes = 0;
    queueMicrotask(() => this.emit('reusable', this.bytes));
  }

  private fail(reason: string, tellPeer = false): void {
    if (this.over) return;
    this.finish();
    if (tellPeer) this.closeWith(cancelFrame(reason));
    else this.bytes.destroy();
    this.emit('error', callError(reason));
  }

  /** The flow is over: it writes nothing more, and no longer counts among its group's flows. */
  private finish(): void {
    this.over = true;
    this.options.windows?.leave(this);
  }

  private tellWindow(bytes: number): void {
    this.toldWindow = bytes;
    this.bytes.write(u32Frame(T_WINDOW, bytes));
  }

  /** Ends the byte stream after `last`; destroys it if the peer does not close its side soon. */
  private closeWith(last?: Buffer): void {
    this.bytes.end(last);
    const timer = setTimeout(() => this.bytes.destroy(), CLOSE_GRACE_MS);
    timer.unref();
    this.bytes.once('close', () => clearTimeout(timer));
  }
}
