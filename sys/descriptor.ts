// Socket descriptors: the fd libuv keeps on a socket's private handle, and a duplicate of it (dup(2)
// through koffi, sys/libc.ts), on which a new net.Socket can be created with options the server's own
// socket was created without (`onread`: agent/listeners.ts, tunnel/flow-listener.ts).
import type * as net from 'node:net';
import { createLogger } from '../logging/logger.js';
import { loadLibc } from './libc.js';

const log = createLogger('sys/descriptor');

/** The file descriptor of a socket or a listening server: libuv keeps it on the private handle. */
export function fdOf(handleOwner: net.Socket | net.Server): number | undefined {
  const fd = (handleOwner as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

type Dup = (fd: number) => number;
/** dup(2) once loaded; null when it cannot be (no koffi: connections keep the server's socket). */
let dup: Dup | null | undefined;

/** A duplicate of a socket's descriptor; undefined when there is none. */
export function duplicate(socket: net.Socket): number | undefined {
  const fd = fdOf(socket);
  if (fd === undefined) return undefined;
  if (dup === undefined) {
    try {
      dup = loadLibc().func('int dup(int fd)') as Dup;
    } catch (e) {
      dup = null;
      log.info('intercepted and flow connections are read through their socket streams: no dup(2)', {
        reason: (e as Error).message,
      });
    }
  }
  const copy = dup ? dup(fd) : -1;
  return copy >= 0 ? copy : undefined;
}
