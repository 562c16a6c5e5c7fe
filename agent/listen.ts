// Where the agent's servers listen: one address when TP_LISTEN_ADDRESS names it, else every address —
// dual-stack where the pod has IPv6, IPv4 only where it has not.
import type * as net from 'node:net';
import { UsageError } from '../netaddr/parse.js';

/**
 * Listens on `port` and resolves with the address it took; a failure names `what` listens there
 * (e.g. "agent port 15001") and why.
 */
export async function listenOnPort(
  server: net.Server,
  port: number,
  listenAddress: string,
  what: string,
): Promise<string> {
  const hosts = listenAddress ? [listenAddress] : ['::', '0.0.0.0'];
  let last: NodeJS.ErrnoException | undefined;
  for (const host of hosts) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port, host }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      return host;
    } catch (e) {
      last = e as NodeJS.ErrnoException;
      // No IPv6 in this network namespace: fall back to IPv4 only.
      if (last.code !== 'EAFNOSUPPORT' && last.code !== 'EADDRNOTAVAIL') break;
    }
  }
  const why = last?.code === 'EADDRINUSE' ? 'the port is in use' : (last?.message ?? 'unknown error');
  throw new UsageError(`cannot listen on ${what}: ${why}`);
}
