// Dialing a TCP destination for a tunnel flow: with a timeout, cancellable, with a reason a user can read.
import * as net from 'node:net';
import { formatHostPort } from '../netaddr/parse.js';

/** net's `onread`: the socket reads into memory the flow offers and hands it each read (tunnel/flow.ts). */
export interface OnRead {
  buffer: () => Uint8Array;
  /** Returns true: the socket reads on (the flow pauses it itself). */
  callback: (bytes: number, into: Uint8Array) => boolean;
}

/**
 * Dials a flow's destination. A dialer that creates the socket with `onread` (and paused: the flow resumes it
 * when it pumps) spares the flow a copy of every read; one that ignores it works the same.
 */
export type Dialer = (signal: AbortSignal, onread?: OnRead) => Promise<net.Socket>;

/**
 * Connects to host:port with half-close enabled (the tunnel carries FIN both ways). With `onread` the socket
 * reads through it and starts paused.
 */
export function dialTcp(
  host: string,
  port: number,
  timeoutMs: number,
  signal?: AbortSignal,
  onread?: OnRead,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const where = formatHostPort(host, port);
    const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true, onread });
    if (onread) socket.pause();
    const fail = (reason: string) => {
      cleanup();
      socket.destroy();
      reject(new Error(reason));
    };
    const timer = setTimeout(() => fail(`no answer from ${where} within ${timeoutMs} ms`), timeoutMs);
    const onAbort = () => fail(`dial to ${where} cancelled`);
    const onError = (e: NodeJS.ErrnoException) =>
      fail(
        e.code === 'ECONNREFUSED' ? `connection refused by ${where}` : `cannot reach ${where}: ${e.message}`,
      );
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      socket.off('connect', onConnect);
    };
    if (signal?.aborted) return fail(`dial to ${where} cancelled`);
    signal?.addEventListener('abort', onAbort);
    socket.once('error', onError);
    socket.once('connect', onConnect);
  });
}
