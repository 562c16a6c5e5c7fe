// Dialing a TCP destination for a tunnel flow: with a timeout, cancellable, with a reason a user can read.
import * as net from 'node:net';

export type Dialer = (signal: AbortSignal) => Promise<net.Socket>;

/** Connects to host:port with half-close enabled (the tunnel carries FIN both ways). */
export function dialTcp(
  host: string,
  port: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const where = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
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
