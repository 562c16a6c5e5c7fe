// A socket's `onread` that can change hands. net takes `onread` only when it creates a socket, and a
// socket created with it emits no 'data': its reads go to the callback. The agent creates an intercepted
// connection handed over by its passthrough thread with a ReadSwitch, so that the tunnel flow reads it
// straight into DATA messages (tunnel/flow.ts, OriginateOptions.reads) as it reads the sockets it dials;
// before a flow takes it, and once a flow hands it over to the app (a replay), its reads go to the socket's
// own stream as usual ('data', pipe, backpressure), each copied out of one shared buffer. A connection a
// server accepted moves to a socket created with one on a duplicate of its descriptor (movedToReadSwitch):
// the manager's and the agent's flow connections (tunnel/flow-listener.ts), the root daemon's VIF
// connections (daemons/root/tunnel-dialer.ts).
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { OnRead } from './dial.js';

/** The switch each socket was created with (readSwitchOf). */
const switches = new WeakMap<object, ReadSwitch>();

/**
 * The ReadSwitch `stream` was created with (attach), if any: whoever takes over its reads (a flow's
 * FramedCall, tunnel/framed-call.ts) may read it into memory of its choosing.
 */
export function readSwitchOf(stream: object): ReadSwitch | undefined {
  return switches.get(stream);
}

/**
 * A socket created on `fd`, a connection's descriptor (handed over by another thread, or a `dup` of one a
 * server accepted), paused; with `reads` as its `onread` (attached) when given. Throws as net does.
 */
export function socketOnDescriptor(fd: number, allowHalfOpen: boolean, reads?: ReadSwitch): net.Socket {
  const options = { fd, allowHalfOpen, pauseOnCreate: true, onread: reads };
  const socket = new net.Socket(options as net.SocketConstructorOpts);
  reads?.attach(socket);
  return socket;
}

/**
 * `socket`'s connection on a socket of its own, created on a duplicate of its descriptor with a ReadSwitch
 * (net takes `onread` only when it creates a socket, and a server creates the sockets it accepts without
 * one). `socket` must be paused and hold no bytes a caller still wants (or the caller takes them first): it
 * is closed, which leaves the connection to the new socket. Undefined, `socket` untouched, when there is no
 * duplicate (`duplicate`: sys/descriptor.ts's, passed in) or no socket can be created on it (`why` hears
 * why).
 */
export function movedToReadSwitch(
  socket: net.Socket,
  duplicate: (socket: net.Socket) => number | undefined,
  options: { allowHalfOpen: boolean; why?: (reason: string) => void },
): net.Socket | undefined {
  const fd = duplicate(socket);
  if (fd === undefined) return undefined;
  let moved: net.Socket;
  try {
    moved = socketOnDescriptor(fd, options.allowHalfOpen, new ReadSwitch());
  } catch (e) {
    options.why?.((e as Error).message);
    fs.closeSync(fd);
    return undefined;
  }
  moved.setNoDelay(true);
  socket.destroy();
  return moved;
}

/** The default reads land here and are copied out at once: one buffer serves every switch. */
const SHARED_BYTES = 64 << 10;
let shared: Buffer | undefined;

export class ReadSwitch implements OnRead {
  private target: OnRead | undefined;
  private socket: net.Socket | undefined;
  /**
   * The memory the current owner of the reads offered for the next one; undefined once the reads changed
   * hands, until they offer again.
   */
  private offered: Uint8Array | undefined;

  /** The socket created with this switch as its `onread`: its stream gets the reads no target takes. */
  attach(socket: net.Socket): this {
    this.socket = socket;
    switches.set(socket, this);
    return this;
  }

  /** Reads go to `target` from now on; undefined: to the socket's own stream. */
  to(target: OnRead | undefined): void {
    this.target = target;
    this.offered = undefined;
  }

  readonly buffer = (): Uint8Array => {
    if (this.target) this.offered = this.target.buffer();
    else {
      shared ??= Buffer.allocUnsafe(SHARED_BYTES);
      this.offered = shared;
    }
    return this.offered;
  };

  readonly callback = (bytes: number, into: Uint8Array): boolean => {
    const target = this.target;
    if (target && into === this.offered) return target.callback(bytes, into);
    // The memory was offered before the reads changed hands: what was read moves to where they go now.
    if (target) return this.copyTo(target, into.subarray(0, bytes));
    const socket = this.socket;
    if (!socket) throw new Error('ReadSwitch: a read before attach()');
    // As net does for a socket without onread: false stops reading until the stream wants more.
    return socket.push(Buffer.from(into.subarray(0, bytes)));
  };

  private copyTo(target: OnRead, bytes: Uint8Array): boolean {
    let more = true;
    for (let at = 0; at < bytes.length; ) {
      const region = target.buffer();
      const n = Math.min(region.length, bytes.length - at);
      region.set(bytes.subarray(at, at + n));
      at += n;
      more = target.callback(n, region) && more;
    }
    return more;
  }
}
