// A TUN device from Node without a native addon: open /dev/net/tun and TUNSETIFF through koffi.
//
// Reading: the fd is non-blocking and wrapped in a libuv pipe handle, so epoll drives the reads on the
// event loop (one packet per 'data' event); a blocking fs.read loop would pin a libuv pool thread and
// keep the process from exiting. Writing: one packet per write(2). A net.Socket write path may coalesce
// queued writes into one writev(), which a TUN takes as ONE packet: the others are lost silently.
import * as fs from 'node:fs';
import * as net from 'node:net';
import koffi from 'koffi';
import { UsageError } from '../netaddr/parse.js';

const O_RDWR = 0o2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFNAMSIZ = 16;
const ENOENT = 2;
const EPERM = 1;
const EBUSY = 16;
const EACCES = 13;

interface Libc {
  open: (path: string, flags: number) => number;
  ioctl: (fd: number, request: number, ...args: unknown[]) => number;
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
    close: lib.func('int close(int fd)'),
    strerror: lib.func('const char *strerror(int errnum)'),
  };
  return libc;
}

// process.binding('pipe_wrap') is how a raw fd becomes an epoll-driven libuv stream: net.Socket({ fd })
// refuses character devices. It is the documented-legacy binding; its Pipe(SOCKET) type has been stable.
interface PipeHandle {
  open(fd: number): number;
}
type PipeWrapBinding = { Pipe: new (type: number) => PipeHandle; constants: { SOCKET: number } };

function pipeWrap(): PipeWrapBinding {
  return (process as unknown as { binding(name: string): PipeWrapBinding }).binding('pipe_wrap');
}

export interface TunDeviceStats {
  packetsIn: number;
  packetsOut: number;
  writeErrors: number;
}

/** An open TUN interface (layer 3, no packet-info header). It disappears when closed or when the process exits. */
export class TunDevice {
  readonly stats: TunDeviceStats = { packetsIn: 0, packetsOut: 0, writeErrors: 0 };
  private readonly reader: net.Socket;
  private closed = false;
  private lastWriteError: string | undefined;

  private constructor(
    readonly name: string,
    private readonly fd: number,
  ) {
    const Pipe = pipeWrap();
    const handle = new Pipe.Pipe(Pipe.constants.SOCKET);
    const rc = handle.open(fd);
    if (rc !== 0) {
      loadLibc().close(fd);
      throw new Error(`cannot watch the TUN device ${name} for reads (libuv error ${rc})`);
    }
    this.reader = new net.Socket({ handle, readable: true, writable: false } as net.SocketConstructorOpts);
    this.reader.on('error', (e) => {
      if (!this.closed) this.onError?.(e);
    });
  }

  /**
   * Creates the TUN interface `name` (a kernel template such as "tp%d" is allowed) and opens it.
   * Errors name the problem and the fix.
   */
  static open(name: string): TunDevice {
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
    const actual = ifr.toString('ascii', 0, IFNAMSIZ).replace(/\0.*$/s, '');
    return new TunDevice(actual, fd);
  }

  /** Called once per packet read; the Buffer is the packet's own (it may be rewritten and written back). */
  onPacket(handler: (packet: Buffer) => void): void {
    this.reader.on('data', (packet: Buffer) => {
      this.stats.packetsIn++;
      handler(packet);
    });
  }

  /** Called when reading fails (the interface was deleted under us). */
  onError: ((e: Error) => void) | undefined;

  /** Writes one packet (one write(2)). Returns false when the kernel refused it; the packet is dropped. */
  write(packet: Uint8Array, length = packet.length): boolean {
    if (this.closed) return false;
    try {
      fs.writeSync(this.fd, packet, 0, length);
      this.stats.packetsOut++;
      return true;
    } catch (e) {
      // EAGAIN (queue full) or EINVAL (a malformed packet): dropping is what a network does; TCP resends.
      this.stats.writeErrors++;
      this.lastWriteError = (e as Error).message;
      return false;
    }
  }

  get lastError(): string | undefined {
    return this.lastWriteError;
  }

  /** Closes the fd: the interface, its addresses and its routes disappear. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader.destroy();
  }
}
