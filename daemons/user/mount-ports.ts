// `--local-mount-port PORT`: the container's volumes served as SFTP on 127.0.0.1:PORT, for a mounter of
// the user's own choosing (sshfs -o directport=PORT, an IDE, rclone) instead of the daemon's sshfs; as
// Telepresence's flag of the same name. Each connection to the port is one mount flow to the agent's
// sftp-server (the same flow, authorization and read-only rule as --mount: docs/mounts.md), opened for the
// intercept as it is at that moment, so a mounter that reconnects after the manager restarted gets the
// restored intercept. Only loopback: the volumes may hold secrets, and SFTP here has no authentication of
// its own.
import * as net from 'node:net';
import { createLogger } from '../../logging/logger.js';
import type { OpenFlow } from './mounts.js';

const log = createLogger('user/mount-ports');

export interface MountPort {
  port: number;
  readWrite: boolean;
}

interface Served extends MountPort {
  server: net.Server;
  sockets: Set<net.Socket>;
}

export class LocalMountPorts {
  private readonly served = new Map<string, Served>();

  /**
   * Listens on 127.0.0.1:port for the intercept or ingest `name`; `open` pumps each connection to the
   * agent. Rejects with a message that names the port when it cannot be taken.
   */
  async serve(name: string, port: number, readWrite: boolean, open: OpenFlow): Promise<void> {
    await this.close(name);
    const sockets = new Set<net.Socket>();
    const server = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      open(socket).then(
        (outcome) => log.debug('a local mount connection ended', { intercept: name, outcome }),
        (e: Error) => {
          log.info('a local mount connection failed', { intercept: name, reason: e.message });
          socket.destroy();
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new Error(
            e.code === 'EADDRINUSE'
              ? `127.0.0.1:${port} is in use: choose another --local-mount-port`
              : `cannot listen on 127.0.0.1:${port} for --local-mount-port: ${e.message}`,
          ),
        ),
      );
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.served.set(name, { port, readWrite, server, sockets });
    log.info('serving the volumes over SFTP', { intercept: name, port, readWrite });
  }

  names(): string[] {
    return [...this.served.keys()];
  }

  portOf(name: string): MountPort | undefined {
    const s = this.served.get(name);
    return s && { port: s.port, readWrite: s.readWrite };
  }

  /** Stops listening and ends the connections (their flows end with them). */
  async close(name: string): Promise<void> {
    const s = this.served.get(name);
    if (!s) return;
    this.served.delete(name);
    for (const socket of s.sockets) socket.destroy();
    await new Promise<void>((resolve) => s.server.close(() => resolve()));
    log.info('stopped serving the volumes', { intercept: name, port: s.port });
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.served.keys()].map((name) => this.close(name)));
  }
}
