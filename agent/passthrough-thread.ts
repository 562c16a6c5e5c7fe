// The agent's passthrough on its own thread, in system calls: accept, dial the app on loopback, copy bytes
// both ways, carry half-closes and resets, close. With iptables capture every connection of a captured
// port comes through the agent, intercepted or not, so this is the path nearly all of them take. On
// Node's `net` it cost two net.Socket objects and their streams per connection, about four times HAProxy's
// CPU per new connection (docs/capture.md); here a connection is the bare system calls HAProxy makes, made
// through koffi from one epoll loop, and one shared buffer carries the bytes. A connection whose port is
// intercepted is not touched: its fd goes to the main thread, which wraps it in a net.Socket and decides
// as it always did (agent/listeners.ts).
//
// Runs as a worker thread (agent/passthrough.ts starts it). The loop never returns to Node's event loop:
// the main thread talks to it through shared memory (which ports to hand over, the counters, stop) and an
// eventfd that wakes epoll_wait; it talks back with postMessage (handed-over connections, log lines).
import { parentPort, workerData } from 'node:worker_threads';
import { loadLibc } from '../sys/libc.js';
import {
  CONTROL_STOP,
  COUNT_DIAL_FAILURES,
  COUNT_PASSED,
  COUNTS_PER_PORT,
  type PassthroughInit,
  type ThreadMessage,
} from './passthrough-shared.js';

// Linux's numbers, the same on x86-64 and arm64.
const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const SO_LINGER = 13;
const SOL_IP = 0;
const SOL_IPV6 = 41;
const SO_ORIGINAL_DST = 80;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const SHUT_WR = 1;
const MSG_NOSIGNAL = 0x4000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLLIN = 0x1;
const EPOLLOUT = 0x4;
const EPOLLERR = 0x8;
const EPOLLHUP = 0x10;
const EPOLLRDHUP = 0x2000;
const EPOLLET = 0x80000000;
/**
 * A connection's socket is registered once, edge-triggered, for everything (as HAProxy's poller does), and
 * never changed: no epoll_ctl per state change (dialed, backpressure, half-close). Close removes it.
 */
const END_EVENTS = (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) >>> 0; // unsigned, as epoll_event's u32
const EINTR = 4;
const EAGAIN = 11;
const EINPROGRESS = 115;
const ECONNREFUSED = 111;
const ECONNABORTED = 103;

/** struct epoll_event is packed on x86-64 (12 bytes), naturally aligned elsewhere (16). */
const EVENT_SIZE = process.arch === 'x64' ? 12 : 16;
const EVENT_DATA = process.arch === 'x64' ? 4 : 8;
const MAX_EVENTS = 256;
/** One read's worth: what a loopback socket usually has ready, and little memory for one thread. */
const BUFFER_BYTES = 256 << 10;
/** epoll_wait's longest sleep: bounds how long the process's exit waits for this thread. */
const WAIT_MS = 1_000;
/** After EMFILE and the like, accepting pauses this long instead of spinning on a readable listener. */
const ACCEPT_PAUSE_MS = 100;
/** While accepting fails (EMFILE), its warning is logged at most this often. */
const ACCEPT_WARNING_INTERVAL_MS = 60_000;
/** Connections accepted per wakeup of the listener, so established ones are not starved. */
const ACCEPT_BATCH = 64;

type Fn = (...args: unknown[]) => number;

/** The C functions the loop calls, declared once through koffi. */
function declare(f: (signature: string) => Fn) {
  return {
    epollCreate: f('int epoll_create1(int flags)'),
    epollCtl: f('int epoll_ctl(int epfd, int op, int fd, void *event)'),
    epollWait: f('int epoll_wait(int epfd, void *events, int maxevents, int timeout)'),
    eventfd: f('int eventfd(unsigned int initval, int flags)'),
    accept: f('int accept4(int fd, void *addr, void *addrlen, int flags)'),
    socket: f('int socket(int domain, int type, int protocol)'),
    connect: f('int connect(int fd, void *addr, uint32_t addrlen)'),
    setsockopt: f('int setsockopt(int fd, int level, int name, void *value, uint32_t length)'),
    getsockopt: f('int getsockopt(int fd, int level, int name, void *value, void *length)'),
    recv: f('intptr_t recv(int fd, void *buf, size_t n, int flags)'),
    send: f('intptr_t send(int fd, void *buf, size_t n, int flags)'),
    shutdown: f('int shutdown(int fd, int how)'),
    read: f('intptr_t read(int fd, void *buf, size_t n)'),
    close: f('int close(int fd)'),
  };
}

interface End {
  fd: number;
  /** Told apart from a later socket that reuses the fd number, within one batch of events. */
  serial: number;
  peer: End;
  conn: Conn;
  /** Bytes read from the peer that this end has not taken yet (its socket buffer was full). */
  pending: Buffer | undefined;
  /**
   * It may have bytes (or its FIN, or an error) to read: set by a readable edge, cleared once a read finds
   * it drained. Edge-triggered, nothing reports it again until more arrives, so an end left unread for
   * backpressure stays readable until its peer has taken what waits.
   */
  readable: boolean;
  /** Its FIN or an error arrived (RDHUP, HUP, ERR): a short read did not reach it, read on. */
  hangup: boolean;
  /** Its FIN was read. */
  readEof: boolean;
  /** Its write side was shut down (FIN sent). */
  shutSent: boolean;
}

interface Conn {
  client: End;
  app: End;
  /** The app's connection is up (connect() said so, or the socket became writable without an error). */
  dialed: boolean;
  portIndex: number;
  closed: boolean;
}

/** Where an fd's events go: a connection's end, the listener, or the wakeup eventfd. */
type Slot = End | 'listener' | 'wake';

class Loop {
  private readonly c: ReturnType<typeof declare>;
  private readonly errno: () => number;
  private readonly ep: number;
  private readonly wake: number;
  private readonly events = Buffer.alloc(EVENT_SIZE * MAX_EVENTS);
  private readonly ev = Buffer.alloc(16);
  private readonly buf = Buffer.allocUnsafe(BUFFER_BYTES);
  private readonly addr = Buffer.alloc(28);
  private readonly addrLen = Buffer.alloc(4);
  private readonly one = Buffer.alloc(4);
  private readonly linger = Buffer.alloc(8);
  private readonly slots: (Slot | undefined)[] = [];
  private readonly serials: number[] = [];
  private nextSerial = 1;
  private listening = true;
  private resumeAcceptAt = 0;
  private lastAcceptWarning = -Infinity;
  /** The app's loopback sockaddr per app port (index) and family. */
  private readonly dial4: Buffer[];
  private readonly dial6: Buffer[];
  private readonly control: Int32Array;
  private readonly counts: Float64Array;

  constructor(private readonly init: PassthroughInit) {
    const libc = loadLibc();
    this.errno = () => libc.errno();
    this.c = declare((signature) => libc.func(signature));
    this.one.writeInt32LE(1, 0);
    this.linger.writeInt32LE(1, 0); // l_onoff 1, l_linger 0: close() resets
    this.control = new Int32Array(init.control);
    this.counts = new Float64Array(init.counts);
    this.dial4 = init.appPorts.map((p) => sockaddr(AF_INET, p));
    this.dial6 = init.appPorts.map((p) => sockaddr(AF_INET6, p));
    this.ep = this.check(this.c.epollCreate(SOCK_CLOEXEC), 'epoll_create1');
    this.wake = this.c.eventfd(0, SOCK_CLOEXEC | SOCK_NONBLOCK);
    try {
      this.check(this.wake, 'eventfd');
      this.register(this.wake, 'wake', EPOLLIN);
      this.register(init.listenFd, 'listener', EPOLLIN);
      // Accepted sockets inherit it: one system call fewer per connection.
      this.noDelay(init.listenFd);
    } catch (e) {
      if (this.wake >= 0) this.c.close(this.wake);
      this.c.close(this.ep);
      throw e;
    }
  }

  get wakeFd(): number {
    return this.wake;
  }

  /**
   * Runs until stopped, then closes its connections and the listener. A failure resets the connections
   * and leaves the listener open: the main thread accepts on it again (passthrough.ts, onFailed).
   */
  run(): void {
    try {
      this.loop();
    } catch (e) {
      this.closeAll(true);
      this.c.close(this.wake);
      this.c.close(this.ep);
      throw e;
    }
    this.closeAll(false);
    this.c.close(this.init.listenFd);
    this.c.close(this.wake);
    this.c.close(this.ep);
  }

  private loop(): void {
    const { events } = this;
    while (Atomics.load(this.control, CONTROL_STOP) === 0) {
      let timeout = WAIT_MS;
      if (!this.listening) {
        const left = this.resumeAcceptAt - Date.now();
        if (left <= 0) {
          this.listening = true;
          this.register(this.init.listenFd, 'listener', EPOLLIN);
        } else timeout = Math.min(timeout, left);
      }
      const n = this.c.epollWait(this.ep, events, MAX_EVENTS, timeout);
      if (n < 0) {
        if (this.errno() === EINTR) continue;
        throw new Error(`epoll_wait failed (errno ${this.errno()})`);
      }
      for (let i = 0; i < n; i++) {
        const at = i * EVENT_SIZE;
        const fd = events.readInt32LE(at + EVENT_DATA);
        const serial = events.readInt32LE(at + EVENT_DATA + 4);
        const slot = this.slots[fd];
        if (slot === undefined || this.serials[fd] !== serial) continue; // closed earlier in this batch
        const mask = events.readUInt32LE(at);
        if (slot === 'listener') this.acceptAll();
        else if (slot === 'wake') this.c.read(this.wake, this.buf, 8);
        else this.onEvent(slot, mask);
      }
    }
  }

  private acceptAll(): void {
    for (let i = 0; i < ACCEPT_BATCH; i++) {
      this.addrLen.writeUInt32LE(this.addr.length, 0);
      const fd = this.c.accept(this.init.listenFd, this.addr, this.addrLen, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        this.accepted(fd);
        continue;
      }
      const e = this.errno();
      if (e === EAGAIN) return;
      if (e === EINTR || e === ECONNABORTED) continue;
      // Out of fds or memory: the listener stays readable, so pause instead of spinning on it.
      const now = Date.now();
      if (now - this.lastAcceptWarning >= ACCEPT_WARNING_INTERVAL_MS) {
        this.lastAcceptWarning = now;
        this.post({
          t: 'log',
          level: 'warn',
          message: `cannot accept connections: pausing accepts for ${ACCEPT_PAUSE_MS} ms at a time`,
          errno: e,
        });
      }
      this.unregister(this.init.listenFd);
      this.listening = false;
      this.resumeAcceptAt = Date.now() + ACCEPT_PAUSE_MS;
      return;
    }
  }

  private accepted(fd: number): void {
    const addr = this.addr;
    const family = addr.readUInt16LE(0);
    const v6 = family === AF_INET6 && !isV4Mapped(addr);
    const portIndex = this.portIndexOf(fd, v6);
    if (portIndex < 0) {
      this.post({
        t: 'log',
        level: 'warn',
        message: 'cannot tell which app port a connection is for: resetting it',
      });
      this.reset(fd);
      return;
    }
    if (Atomics.load(this.control, portIndex + 1) !== 0) {
      // Intercepted (or personal intercepts) on this port: the main thread decides, as for every connection.
      this.post({ t: 'handover', fd, appPort: this.init.appPorts[portIndex] as number });
      return;
    }
    this.bump(portIndex, COUNT_PASSED);
    const dialV6 = this.init.loopback === '::1' || (this.init.loopback === 'by-family' && v6);
    const app = this.c.socket(dialV6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (app < 0) {
      this.dialFailed(portIndex, this.errno());
      this.reset(fd);
      return;
    }
    this.noDelay(app);
    const to = (dialV6 ? this.dial6 : this.dial4)[portIndex] as Buffer;
    const conn: Conn = { dialed: false, portIndex, closed: false } as Conn;
    conn.client = this.end(fd, conn);
    conn.app = this.end(app, conn);
    conn.client.peer = conn.app;
    conn.app.peer = conn.client;
    if (this.c.connect(app, to, to.length) === 0) conn.dialed = true;
    else {
      const e = this.errno();
      if (e !== EINPROGRESS) {
        this.dialFailed(portIndex, e);
        this.closeConn(conn, true);
        return;
      }
    }
    // Both are read at once, the app while its connection is being made (on loopback the handshake is done
    // within connect(), which still says EINPROGRESS): its first writable event says it is up, its first
    // error that the dial failed (abort: counted, the client reset). What the client sends meanwhile waits
    // in the app's pending bytes; its FIN waits for the connection (a shutdown before would abort it).
    this.register(app, conn.app, END_EVENTS);
    this.register(fd, conn.client, END_EVENTS);
  }

  /** The app port's index: the listener's only one, else SO_ORIGINAL_DST's port; -1 when it is none. */
  private portIndexOf(fd: number, v6: boolean): number {
    const ports = this.init.appPorts;
    if (ports.length === 1) return 0;
    const levels = v6 ? [SOL_IPV6] : [SOL_IP, SOL_IPV6];
    for (const level of levels) {
      this.addrLen.writeUInt32LE(this.addr.length, 0);
      if (this.c.getsockopt(fd, level, SO_ORIGINAL_DST, this.addr, this.addrLen) === 0)
        return ports.indexOf(this.addr.readUInt16BE(2));
    }
    return -1;
  }

  /** An end of `conn`; its peer is set by the caller, once both exist. */
  private end(fd: number, conn: Conn): End {
    return {
      fd,
      serial: 0,
      conn,
      pending: undefined,
      readable: false,
      hangup: false,
      readEof: false,
      shutSent: false,
    } as unknown as End;
  }

  private onEvent(end: End, mask: number): void {
    const conn = end.conn;
    if (mask & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      end.readable = true;
      if (mask & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) end.hangup = true;
    }
    if (!conn.dialed && end === conn.app) {
      if (mask & (EPOLLERR | EPOLLHUP)) {
        this.abort(conn, end, this.socketError(end));
        return;
      }
      if (!(mask & EPOLLOUT)) return;
      conn.dialed = true;
      if (!end.pending && conn.client.readEof) this.finishDirection(conn.client);
    }
    if (mask & EPOLLOUT && end.pending) this.flush(end);
    if (conn.closed) return;
    this.pump(end);
    // An error not read (its peer cannot take more, or its FIN was read before): the connection is over.
    if (!conn.closed && mask & EPOLLERR) this.abort(conn, end, this.socketError(end));
  }

  /** The socket's pending error (SO_ERROR), or errno when even that cannot be read. */
  private socketError(end: End): number {
    this.addrLen.writeUInt32LE(4, 0);
    return this.c.getsockopt(end.fd, SOL_SOCKET, SO_ERROR, this.addr, this.addrLen) === 0
      ? this.addr.readInt32LE(0)
      : this.errno();
  }

  /**
   * Reads what `from` has and writes it to its peer, until it is drained, its FIN or an error, or its peer
   * cannot take more: what the peer did not take waits in its pending, and reading `from` resumes once that
   * is out (flush).
   */
  private pump(from: End): void {
    const to = from.peer;
    const conn = from.conn;
    while (from.readable && !from.readEof && to.pending === undefined) {
      const n = this.c.recv(from.fd, this.buf, BUFFER_BYTES, 0);
      if (n > 0) {
        // A short read took all there was: more bytes bring a new edge. A FIN or an error that came with
        // them does not: read on to it.
        if (n < BUFFER_BYTES && !from.hangup) from.readable = false;
        let w = this.c.send(to.fd, this.buf, n, MSG_NOSIGNAL);
        if (w === n) continue;
        if (w < 0) {
          const e = this.errno();
          if (e !== EAGAIN) {
            this.abort(conn, to, e);
            return;
          }
          w = 0;
        }
        to.pending = Buffer.from(this.buf.subarray(w, n));
        return;
      }
      if (n === 0) {
        from.readEof = true;
        from.readable = false;
        this.finishDirection(from);
        return;
      }
      const e = this.errno();
      if (e === EAGAIN) from.readable = false;
      else if (e !== EINTR) {
        this.abort(conn, from, e);
        return;
      }
    }
  }

  /** Writes what waits for `to`; once all is out, reading its peer resumes (or its FIN follows). */
  private flush(to: End): void {
    const pending = to.pending as Buffer;
    const w = this.c.send(to.fd, pending, pending.length, MSG_NOSIGNAL);
    if (w < 0) {
      const e = this.errno();
      if (e !== EAGAIN) this.abort(to.conn, to, e);
      return;
    }
    if (w < pending.length) {
      to.pending = pending.subarray(w);
      return;
    }
    to.pending = undefined;
    if (to.peer.readEof) this.finishDirection(to.peer);
    else this.pump(to.peer);
  }

  /** `from` sent its FIN and all it sent went to its peer: the FIN follows, and the connection may be done. */
  private finishDirection(from: End): void {
    const to = from.peer;
    if (to.pending || (to === to.conn.app && !to.conn.dialed)) return; // flush or the dial finishes it
    if (to.readEof && from.shutSent) {
      // The other way is over too: close() sends the same FIN as shutdown() would, and ends the connection.
      this.closeConn(from.conn, false);
      return;
    }
    if (!to.shutSent) {
      this.c.shutdown(to.fd, SHUT_WR);
      to.shutSent = true;
    }
  }

  /**
   * `bad` failed with `errno` (reset, or an error on it): the other end is reset, as the agent always did.
   * The app's end failing before its connection was known to be up is a failed dial.
   */
  private abort(conn: Conn, bad: End, errno: number): void {
    if (bad === conn.app && !conn.dialed) this.dialFailed(conn.portIndex, errno);
    const other = bad.peer;
    this.c.setsockopt(other.fd, SOL_SOCKET, SO_LINGER, this.linger, 8);
    this.closeConn(conn, false);
  }

  /** Closes every connection: each has both its ends in the slots from accept until it is closed. */
  private closeAll(resetClients: boolean): void {
    for (const slot of this.slots) if (typeof slot === 'object') this.closeConn(slot.conn, resetClients);
  }

  /** Closes both ends; `resetClient`: the client gets an RST (the app could not be dialed). */
  private closeConn(conn: Conn, resetClient: boolean): void {
    if (conn.closed) return;
    conn.closed = true;
    if (resetClient) this.c.setsockopt(conn.client.fd, SOL_SOCKET, SO_LINGER, this.linger, 8);
    for (const end of [conn.client, conn.app]) {
      this.slots[end.fd] = undefined;
      this.c.close(end.fd);
    }
  }

  private register(fd: number, slot: Slot, mask: number): void {
    const serial = this.nextSerial++ & 0x7fffffff;
    this.slots[fd] = slot;
    this.serials[fd] = serial;
    if (typeof slot === 'object') slot.serial = serial;
    this.ctl(EPOLL_CTL_ADD, fd, mask, serial);
  }

  private unregister(fd: number): void {
    this.c.epollCtl(this.ep, EPOLL_CTL_DEL, fd, this.ev);
  }

  private ctl(op: number, fd: number, mask: number, serial: number): void {
    const ev = this.ev;
    ev.writeUInt32LE(mask, 0);
    ev.writeInt32LE(fd, EVENT_DATA);
    ev.writeInt32LE(serial, EVENT_DATA + 4);
    this.check(this.c.epollCtl(this.ep, op, fd, ev), 'epoll_ctl');
  }

  private noDelay(fd: number): void {
    this.c.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, this.one, 4);
  }

  private reset(fd: number): void {
    this.c.setsockopt(fd, SOL_SOCKET, SO_LINGER, this.linger, 8);
    this.c.close(fd);
  }

  private dialFailed(portIndex: number, errno: number): void {
    this.bump(portIndex, COUNT_DIAL_FAILURES);
    if (errno !== ECONNREFUSED || this.init.debug)
      this.post({
        t: 'log',
        level: errno === ECONNREFUSED ? 'debug' : 'info',
        message:
          errno === ECONNREFUSED
            ? 'the app refused a passthrough connection'
            : 'cannot dial the app for a passthrough connection',
        errno,
        appPort: this.init.appPorts[portIndex],
      });
  }

  /** Only this thread writes the counters; the main thread reads them. */
  private bump(portIndex: number, kind: number): void {
    const i = portIndex * COUNTS_PER_PORT + kind;
    this.counts[i] = (this.counts[i] as number) + 1;
  }

  private post(m: ThreadMessage): void {
    parentPort?.postMessage(m);
  }

  private check(r: number, what: string): number {
    if (r < 0) throw new Error(`${what} failed (errno ${this.errno()})`);
    return r;
  }
}

/** struct sockaddr_in 127.0.0.1:port, or sockaddr_in6 [::1]:port. */
function sockaddr(family: number, port: number): Buffer {
  const b = Buffer.alloc(family === AF_INET ? 16 : 28);
  b.writeUInt16LE(family, 0);
  b.writeUInt16BE(port, 2);
  if (family === AF_INET) b.writeUInt32BE(0x7f000001, 4);
  else b[23] = 1; // sin6_addr starts at 8: ::1
  return b;
}

/** An AF_INET6 sockaddr holding ::ffff:a.b.c.d (an IPv4 client of a dual-stack listener). */
function isV4Mapped(addr: Buffer): boolean {
  for (let i = 8; i < 18; i++) if (addr[i] !== 0) return false;
  return addr[18] === 0xff && addr[19] === 0xff;
}

if (parentPort && (workerData as { passthrough?: PassthroughInit } | undefined)?.passthrough) {
  const init = (workerData as { passthrough: PassthroughInit }).passthrough;
  let loop: Loop;
  try {
    loop = new Loop(init);
  } catch (e) {
    parentPort.postMessage({ t: 'failed', message: (e as Error).message } satisfies ThreadMessage);
    process.exit(0);
  }
  parentPort.postMessage({ t: 'ready', wakeFd: loop.wakeFd } satisfies ThreadMessage);
  loop.run();
}
