// A TUN device from Node without a native addon: open /dev/net/tun and TUNSETIFF through koffi.
//
// The packet loop (TunLoop) runs in a worker thread with its own duplicate of the fd (dupFd): each thread
// owns and closes its own fd, and the interface disappears when the last one closes. It is a loop of
// system calls through koffi, poll, read and write into one reused buffer, and never returns to the
// thread's event loop until it stops: the other side of the thread talks to it through its MessagePort,
// drained with receiveMessageOnPort, and an eventfd that wakes its poll (a Waker). Through Node's streams
// (a libuv pipe handle, a 'data' event per packet, fs.writeSync) a packet cost the thread ~30 µs of CPU,
// 57 % of it in Node and V8 (a Buffer, a stream push and a write request per packet); in system calls ~19
// (one connection's sequential requests on bench/vif's topology, a packet each way per request:
// daemons/root/README.md).
//
// Writing: one packet per write(2). A net.Socket write path may coalesce queued writes into one writev(),
// which a TUN takes as ONE packet: the others are lost silently.
import koffi from 'koffi';
import { UsageError } from '../netaddr/parse.js';

const O_RDWR = 0o2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFNAMSIZ = 16;
const EPERM = 1;
const ENOENT = 2;
const EACCES = 13;
const EBUSY = 16;

const EINTR = 4;
const EAGAIN = 11;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const POLLIN = 0x1;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
/** struct pollfd: int fd; short events; short revents. */
const POLLFD_SIZE = 8;
/** The loop's longest sleep: bounds how long a worker.terminate() or the process's exit waits for it. */
const POLL_MS = 500;
/** Packets read per wakeup before the messages are looked at again, so a flood does not starve them. */
const READ_BATCH = 64;
/** Larger than any packet a TUN hands over (the MTU is at most 65535). */
const PACKET_BUFFER_BYTES = 65_536;

interface Libc {
  open: (path: string, flags: number) => number;
  ioctl: (fd: number, request: number, ...args: unknown[]) => number;
  fcntl: (fd: number, cmd: number, ...args: unknown[]) => number;
  close: (fd: number) => number;
  read: (fd: number, buf: Uint8Array, count: number) => number;
  write: (fd: number, buf: Uint8Array, count: number) => number;
  poll: (fds: Uint8Array, nfds: number, timeout: number) => number;
  eventfd: (initval: number, flags: number) => number;
  strerror: (errno: number) => string;
}

let libc: Libc | undefined;

function loadLibc(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    open: lib.func('int open(const char *path, int flags, ...)'),
    ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
    fcntl: lib.func('int fcntl(int fd, int cmd, ...)'),
    close: lib.func('int close(int fd)'),
    read: lib.func('long read(int fd, void *buf, size_t count)'),
    write: lib.func('long write(int fd, const void *buf, size_t count)'),
    poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)'),
    eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
    strerror: lib.func('const char *strerror(int errnum)'),
  };
  return libc;
}

export interface OpenTun {
  /** The interface name the kernel gave (a template such as "tp%d" is resolved). */
  name: string;
  fd: number;
}

/** Creates the TUN interface `name` and opens it (non-blocking). Errors name the problem and the fix. */
export function openTun(name: string): OpenTun {
  if (Buffer.byteLength(name) >= IFNAMSIZ)
    throw new UsageError(`interface name "${name}" is longer than 15 bytes`);
  const c = loadLibc();
  const fd = c.open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const errno = koffi.errno();
    if (errno === ENOENT)
      throw new UsageError(
        '/dev/net/tun does not exist: load the tun kernel module (modprobe tun), or connect with --no-vif',
      );
    if (errno === EACCES || errno === EPERM)
      throw new UsageError(
        'cannot open /dev/net/tun: the root daemon must run as root (or with CAP_NET_ADMIN)',
      );
    throw new Error(`cannot open /dev/net/tun: ${c.strerror(errno)}`);
  }
  // struct ifreq: char ifr_name[IFNAMSIZ]; short ifr_flags; (padded to 40 bytes)
  const ifr = Buffer.alloc(40);
  ifr.write(name, 0, IFNAMSIZ - 1, 'ascii');
  ifr.writeUInt16LE(IFF_TUN | IFF_NO_PI, IFNAMSIZ);
  if (c.ioctl(fd, TUNSETIFF, 'void *', ifr) < 0) {
    const errno = koffi.errno();
    c.close(fd);
    if (errno === EBUSY)
      throw new UsageError(
        `the network interface ${name} already exists and is in use: is another tp root daemon running in this network namespace? (tp quit, or ip link del ${name})`,
      );
    if (errno === EPERM)
      throw new UsageError(
        `cannot create the TUN interface ${name}: the root daemon needs CAP_NET_ADMIN (run it as root)`,
      );
    throw new Error(`cannot create the TUN interface ${name}: ${c.strerror(errno)}`);
  }
  return { name: ifr.toString('ascii', 0, IFNAMSIZ).replace(/\0.*$/s, ''), fd };
}

/** A second fd on the same open TUN (for the packet worker). */
export function dupFd(fd: number): number {
  const c = loadLibc();
  const copy = c.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0);
  if (copy < 0) throw new Error(`cannot duplicate the TUN fd: ${c.strerror(koffi.errno())}`);
  return copy;
}

export function closeFd(fd: number): void {
  loadLibc().close(fd);
}

/**
 * Wakes a TunLoop's poll from another thread: an eventfd. The creating thread closes it (close()) once the
 * loop's thread has ended.
 */
export class Waker {
  readonly fd: number;
  /** The 8-byte 1 an eventfd write adds. */
  private readonly one = new Uint8Array(new BigUint64Array([1n]).buffer);

  constructor() {
    const c = loadLibc();
    this.fd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.fd < 0)
      throw new Error(`cannot create an eventfd for the packet loop: ${c.strerror(koffi.errno())}`);
  }

  wake(): void {
    loadLibc().write(this.fd, this.one, 8);
  }

  close(): void {
    loadLibc().close(this.fd);
  }
}

export interface TunLoopHandlers {
  /** One packet: a view of the loop's buffer, valid until this returns (copy what is kept). */
  packet(packet: Buffer): void;
  /** The waker was woken: look at the messages. */
  wake(): void;
  /** Every turn of the loop, at least every POLL_MS: run what is due. */
  tick(): void;
  /** Reading the TUN failed (not EAGAIN): the loop stops reading it and goes on waking. */
  error(e: Error): void;
}

/**
 * Reads packets from a TUN fd in a loop of system calls on this thread (a worker: run() blocks it until
 * stop()). Does not close the fds.
 */
export class TunLoop {
  packets = 0;
  private stopped = false;
  private readable = true;
  private readonly buf = Buffer.allocUnsafe(PACKET_BUFFER_BYTES);
  private readonly fds = Buffer.alloc(2 * POLLFD_SIZE);

  constructor(
    private readonly fd: number,
    wakeFd: number,
    private readonly on: TunLoopHandlers,
  ) {
    this.fds.writeInt32LE(wakeFd, 0);
    this.fds.writeInt16LE(POLLIN, 4);
    this.fds.writeInt32LE(fd, POLLFD_SIZE);
    this.fds.writeInt16LE(POLLIN, POLLFD_SIZE + 4);
  }

  /** Until stop() (called from a handler). */
  run(): void {
    const c = loadLibc();
    const scratch = new Uint8Array(8);
    while (!this.stopped) {
      const n = c.poll(this.fds, this.readable ? 2 : 1, POLL_MS);
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === EINTR) continue;
        this.on.error(new Error(`poll on the TUN device failed: ${c.strerror(errno)}`));
        return;
      }
      // The messages first, so a 'dialed' does not wait behind a batch of packets.
      if (this.fds.readInt16LE(6) & POLLIN) {
        c.read(this.fds.readInt32LE(0), scratch, 8);
        this.on.wake();
      }
      if (
        !this.stopped &&
        this.readable &&
        this.fds.readInt16LE(POLLFD_SIZE + 6) & (POLLIN | POLLERR | POLLHUP | POLLNVAL)
      )
        this.readBatch(c);
      this.on.tick();
    }
  }

  stop(): void {
    this.stopped = true;
  }

  private readBatch(c: Libc): void {
    for (let i = 0; i < READ_BATCH && !this.stopped; i++) {
      const n = c.read(this.fd, this.buf, PACKET_BUFFER_BYTES);
      if (n > 0) {
        this.packets++;
        this.on.packet(this.buf.subarray(0, n));
        continue;
      }
      const errno = n < 0 ? koffi.errno() : 0;
      if (errno === EAGAIN) return;
      if (errno === EINTR) continue;
      this.readable = false;
      this.on.error(
        new Error(
          n === 0 ? 'the TUN device was closed' : `reading the TUN device failed: ${c.strerror(errno)}`,
        ),
      );
      return;
    }
  }
}

/** Writes packets to a TUN fd, one write(2) each. Does not own the fd. */
export class TunWriter {
  packets = 0;
  errors = 0;
  lastError: string | undefined;
  private open = true;

  constructor(private readonly fd: number) {}

  /** Writes one packet; false when the kernel refused it (it is dropped, as a network would). */
  write(packet: Uint8Array, length = packet.length): boolean {
    if (!this.open) return false;
    const c = loadLibc();
    if (c.write(this.fd, packet, length) === length) {
      this.packets++;
      return true;
    }
    // EAGAIN (queue full) or EINVAL (a malformed packet): TCP resends, UDP may drop.
    this.errors++;
    this.lastError = c.strerror(koffi.errno());
    return false;
  }

  /** No write after this (the fd is about to be closed by its owner). */
  stop(): void {
    this.open = false;
  }
}
