// A TUN device from Node without a native addon: open /dev/net/tun and TUNSETIFF through koffi.
//
// Reading: the fd is non-blocking and wrapped in a libuv pipe handle, so epoll drives the reads on the
// event loop of the thread that owns the reader (one packet per 'data' event); a blocking fs.read loop
// would pin a libuv pool thread and keep the process from exiting. Writing: one packet per write(2). A
// net.Socket write path may coalesce queued writes into one writev(), which a TUN takes as ONE packet:
// the others are lost silently.
//
// The packet loop runs in a worker thread with its own duplicate of the fd (dupFd): each thread owns and
// closes its own fd, and the interface disappears when the last one closes.
import * as fs from 'node:fs';
import * as net from 'node:net';
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

interface Libc {
  open: (path: string, flags: number) => number;
  ioctl: (fd: number, request: number, ...args: unknown[]) => number;
  fcntl: (fd: number, cmd: number, ...args: unknown[]) => number;
  close: (fd: number) => number;
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

// process.binding('pipe_wrap') is how a raw fd becomes an epoll-driven libuv stream: net.Socket({ fd })
// refuses character devices. It is the documented-legacy binding; its Pipe(SOCKET) type has been stable
// and it is available in worker threads.
interface PipeHandle {
  open(fd: number): number;
}
type PipeWrapBinding = { Pipe: new (type: number) => PipeHandle; constants: { SOCKET: number } };

function pipeWrap(): PipeWrapBinding {
  return (process as unknown as { binding(name: string): PipeWrapBinding }).binding('pipe_wrap');
}

/** Reads packets from a TUN fd on this thread's event loop; close() closes the fd. */
export class TunReader {
  packets = 0;
  private readonly socket: net.Socket;
  private closed = false;

  constructor(fd: number, onPacket: (packet: Buffer) => void, onError: (e: Error) => void) {
    const { Pipe, constants } = pipeWrap();
    const handle = new Pipe(constants.SOCKET);
    const rc = handle.open(fd);
    if (rc !== 0) throw new Error(`cannot watch the TUN device for reads (libuv error ${rc})`);
    this.socket = new net.Socket({ handle, readable: true, writable: false } as net.SocketConstructorOpts);
    this.socket.on('data', (packet: Buffer) => {
      this.packets++;
      onPacket(packet);
    });
    this.socket.on('error', (e) => {
      if (!this.closed) onError(e);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
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
    try {
      fs.writeSync(this.fd, packet, 0, length);
      this.packets++;
      return true;
    } catch (e) {
      // EAGAIN (queue full) or EINVAL (a malformed packet): TCP resends, UDP may drop.
      this.errors++;
      this.lastError = (e as Error).message;
      return false;
    }
  }

  /** No write after this (the fd is about to be closed by its owner). */
  stop(): void {
    this.open = false;
  }
}
