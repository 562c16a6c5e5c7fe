// Remote mounts, the agent's side: for each mount flow the manager announces (a DialRequest with mount
// set, only ever for the client session that owns the intercept or ingest), the agent opens the tunnel
// stream that answers it and runs one sftp-server (OpenSSH's, read-only) on it, rooted at the container's
// volumes, which the injector mounted under MOUNTS_DIR/<container>. Nothing runs while no one mounts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from '../logging/logger.js';
import type { DialRequest } from '../rpc/gen/manager.js';
import { AGENT_WINDOWS } from '../rpc/grpc-options.js';
import type { ManagerClient } from '../rpc/manager-service.js';
import type { Dialer } from '../tunnel/dial.js';
import { serveDial } from '../tunnel/flow.js';
import { DEFAULT_DIAL_TIMEOUT_MS, formatConnectionId, msg, streamInfo } from '../tunnel/messages.js';
import { spawnOnSocket } from '../tunnel/process-socket.js';
import { TunnelStream } from '../tunnel/stream.js';

/** Where the injector mounts each app container's volumes in the agent: MOUNTS_DIR/<container>/<mountPath>. */
export const MOUNTS_DIR = '/tp/mounts';
export const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

export interface FileServerOptions {
  /** The app containers' names: a request for any other is refused. */
  containers: string[];
  mountsDir?: string;
  sftpServer?: string;
  log: Logger;
}

/**
 * sftp-server's arguments: read-only (-R), starting in the container's directory (-d), logging errors
 * to stderr (-e). It has no chroot without root: what a client can reach beyond the volumes is the agent
 * container's own filesystem as the agent's UID (docs/mounts.md says what that holds).
 */
export function sftpServerArgs(root: string): string[] {
  return ['-R', '-e', '-l', 'ERROR', '-d', root];
}

/** The directory served for a container, or why there is none. */
export function mountRoot(
  container: string,
  containers: string[],
  mountsDir: string,
): { root: string } | { error: string } {
  if (!containers.includes(container))
    return { error: `the pod has no container "${container}": its containers are ${containers.join(', ')}` };
  const root = path.join(mountsDir, container);
  if (!fs.existsSync(root)) return { error: `container "${container}" mounts no volumes` };
  return { root };
}

/** The dialer of one mount flow: an sftp-server on a socket pair. */
export function sftpDialer(root: string, sftpServer: string, log: Logger): Dialer {
  return async () => {
    const p = await spawnOnSocket(sftpServer, sftpServerArgs(root));
    p.child.once('exit', (code, signal) => {
      if (code !== 0 && signal === null)
        log.warn('sftp-server failed', { root, code, stderr: p.stderr() || undefined });
      else log.debug('sftp-server ended', { root, code, signal });
    });
    return p.socket;
  };
}

/** Answers one mount request: the stream with its relay id, then an sftp-server pumped through it. */
export function serveMount(
  client: ManagerClient,
  sessionId: string,
  req: DialRequest,
  options: FileServerOptions,
): void {
  const { log } = options;
  const info = streamInfo({
    connId: req.connId,
    sessionId,
    relayId: req.relayId,
    dialTimeoutMs: req.dialTimeoutMs || DEFAULT_DIAL_TIMEOUT_MS,
    // A mount may sit unused for hours; it ends with the client's unmount or the session.
    idleTimeoutMs: 0,
  });
  const stream = TunnelStream.open(client, AGENT_WINDOWS);
  stream.send(msg.open(info));
  const where = mountRoot(req.container, options.containers, options.mountsDir ?? MOUNTS_DIR);
  const dialer: Dialer =
    'error' in where
      ? () => Promise.reject(new Error(where.error))
      : sftpDialer(where.root, options.sftpServer ?? SFTP_SERVER, log);
  log.info('serving a mount', { intercept: req.interceptId, container: req.container });
  void serveDial(stream, info, dialer, { log }).then((o) => {
    if (o.kind === 'rejected') log.warn('mount refused', { intercept: req.interceptId, reason: o.reason });
    else log.info('mount ended', { flow: formatConnectionId(req.connId), outcome: o.kind });
  });
}
