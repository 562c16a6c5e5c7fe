// A byte relay between a TCP address and a unix socket (either way round). Two of them carry the
// host's kubectl into the lab: 127.0.0.1:16443 in the root namespace -> a unix socket (a path in
// the filesystem is reachable from every network namespace) -> inside tplab-node, 127.0.0.1:6443.
// TLS passes through untouched: the API server's certificate names 127.0.0.1.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { createLogger } from '../logging/logger.js';
import { parseHostPort, UsageError } from '../netaddr/parse.js';

const log = createLogger('tp-lab/relay');

export type RelayEndpoint = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** "tcp:HOST:PORT" or "unix:/path". */
export function parseRelayEndpoint(value: string, what: string): RelayEndpoint {
  if (value.startsWith('unix:')) {
    const p = value.slice('unix:'.length);
    if (!p.startsWith('/')) throw new UsageError(`invalid ${what} "${value}": expected unix:/absolute/path`);
    // sun_path holds 107 bytes plus the terminator.
    if (Buffer.byteLength(p) > 107) {
      throw new UsageError(
        `invalid ${what}: the unix socket path ${p} is longer than 107 bytes; use a shorter TP_LAB_DIR`,
      );
    }
    return { kind: 'unix', path: p };
  }
  if (value.startsWith('tcp:')) {
    const { host, port } = parseHostPort(value.slice('tcp:'.length), what);
    return { kind: 'tcp', host, port };
  }
  throw new UsageError(`invalid ${what} "${value}": expected tcp:HOST:PORT or unix:/path`);
}

const describe = (e: RelayEndpoint) => (e.kind === 'tcp' ? `${e.host}:${e.port}` : e.path);

/** Serves `listen`, piping every accepted connection to a new connection to `connect`. */
export function startRelay(listen: RelayEndpoint, connect: RelayEndpoint): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (downstream) => {
    const upstream = net.connect({
      ...(connect.kind === 'tcp' ? { host: connect.host, port: connect.port } : { path: connect.path }),
      allowHalfOpen: true,
    });
    // Half-close travels through (pipe ends the other side's write half); errors reset both ends.
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    const fail = (err: Error) => {
      log.debug('relayed connection failed', { to: describe(connect), error: err });
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on('error', fail);
    upstream.on('error', fail);
  });
  if (listen.kind === 'unix') fs.rmSync(listen.path, { force: true });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(
          new UsageError(
            `${describe(listen)} is already in use by another process: stop it, or run the lab on another port with TP_LAB_API_PORT`,
          ),
        );
      } else reject(err);
    });
    const onListening = () => {
      log.info('relaying', { from: describe(listen), to: describe(connect) });
      resolve(server);
    };
    if (listen.kind === 'tcp') server.listen({ host: listen.host, port: listen.port }, onListening);
    else server.listen({ path: listen.path }, onListening);
  });
}

/** Whether something accepts TCP connections on host:port (from this namespace). */
export function tcpPortInUse(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(true));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(false)));
  });
}
