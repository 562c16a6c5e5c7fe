// Where the agent's servers listen: one address when TP_LISTEN_ADDRESS names it, else every address —
// dual-stack where the pod has IPv6, IPv4 only where it has not. Under tp-agent-holder (holder.ts) the
// sockets already exist: the holder bound them and the worker inherits them (TP_LISTEN_FDS), so they
// outlive a worker that dies.
import type * as net from 'node:net';
import { UsageError } from '../netaddr/parse.js';
import { LISTEN_FDS_VARIABLE, parseListenFds } from './holder-policy.js';

let inherited: Map<number, number> | undefined;

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
  inherited ??= parseListenFds(process.env[LISTEN_FDS_VARIABLE]);
  const fd = inherited.get(port);
  if (fd !== undefined) {
    try {
      await listenOn(server, { fd });
    } catch (e) {
      throw new UsageError(
        `cannot listen on ${what} (fd ${fd} from tp-agent-holder): ${(e as Error).message}`,
      );
    }
    return (server.address() as net.AddressInfo).address;
  }
  const hosts = listenAddress ? [listenAddress] : ['::', '0.0.0.0'];
  let last: NodeJS.ErrnoException | undefined;
  for (const host of hosts) {
    try {
      await listenOn(server, { port, host });
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

function listenOn(server: net.Server, options: net.ListenOptions | { fd: number }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
