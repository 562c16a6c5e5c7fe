// SO_ORIGINAL_DST: the address a connection was sent to before iptables REDIRECT brought it to the agent.
// Read with getsockopt through koffi on the socket's fd (sys/libc.ts: loaded on first use).
import type * as net from 'node:net';
import { fdOf } from '../sys/descriptor.js';
import { loadLibc } from '../sys/libc.js';

const SOL_IP = 0;
const SOL_IPV6 = 41;
/** SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST (IPv6) share the number 80. */
const SO_ORIGINAL_DST = 80;
const AF_INET = 2;
const AF_INET6 = 10;

type GetSockOpt = (fd: number, level: number, name: number, value: Buffer, length: number[]) => number;
let getsockopt: GetSockOpt | undefined;

function load(): GetSockOpt {
  getsockopt ??= loadLibc().func(
    'int getsockopt(int fd, int level, int name, _Out_ uint8_t *value, _Inout_ uint32_t *length)',
  ) as GetSockOpt;
  return getsockopt;
}

export interface OriginalDst {
  address: string;
  port: number;
}

/** Parses a struct sockaddr_in / sockaddr_in6 as the kernel fills it. */
export function parseSockaddr(buf: Buffer): OriginalDst | undefined {
  const family = buf.readUInt16LE(0);
  const port = buf.readUInt16BE(2);
  if (family === AF_INET) return { address: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`, port };
  if (family === AF_INET6) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(8 + i * 2).toString(16));
    // Uncompressed text is valid IPv6 and all the agent needs it for is dialing.
    return { address: groups.join(':'), port };
  }
  return undefined;
}

/**
 * The original destination of a redirected connection, or undefined when it was not redirected (a
 * direct connection to the agent port) or the fd is not reachable.
 */
export function originalDst(socket: net.Socket): OriginalDst | undefined {
  const fd = fdOf(socket);
  if (fd === undefined) return undefined;
  const call = load();
  const buf = Buffer.alloc(28);
  const v6 = socket.localAddress?.includes(':') && !socket.localAddress.startsWith('::ffff:');
  const tries = v6 ? [SOL_IPV6] : [SOL_IP, SOL_IPV6];
  for (const level of tries) {
    const length = [buf.length];
    if (call(fd, level, SO_ORIGINAL_DST, buf, length) === 0) return parseSockaddr(buf);
  }
  return undefined;
}
