// Remote mounts, the agent's side: for each mount flow the manager announces (a DialRequest with mount
// set, only ever for the client session that owns the intercept or ingest), the agent opens the tunnel
// stream that answers it and runs one sftp-server (OpenSSH's; read-only unless the client asked for
// writes) on it, started in the container's volumes, which the injector mounted under
// MOUNTS_DIR/<container>. Every request passes sftp-filter.ts first: it confines the client to those
// volumes and refuses writes on read-only ones. Nothing runs while no one mounts.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import type { Logger } from '../logging/logger.js';
import type { DialRequest } from '../rpc/gen/manager.js';
import { AGENT_WINDOWS } from '../rpc/grpc-options.js';
import type { ManagerClient } from '../rpc/manager-service.js';
import type { Dialer } from '../tunnel/dial.js';
import { serveDial } from '../tunnel/flow.js';
import { DEFAULT_DIAL_TIMEOUT_MS, formatConnectionId, msg, streamInfo } from '../tunnel/messages.js';
import { socketPair } from '../tunnel/process-socket.js';
import { TunnelStream } from '../tunnel/stream.js';
import { type Confinement, classify, decide, PacketSplitter, statusPacket } from './sftp-filter.js';

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
 * sftp-server's arguments: read-only (-R) unless the client asked for writes, starting in the
 * container's directory (-d), logging errors to stderr (-e). `-d` is no jail (sftp-server has no chroot
 * without root): sftp-filter.ts is.
 */
export function sftpServerArgs(root: string, readWrite: boolean): string[] {
  return [...(readWrite ? [] : ['-R']), '-e', '-l', 'ERROR', '-d', root];
}

const within = (root: string, p: string) =>
  p === root || p.startsWith(root.endsWith('/') ? root : `${root}/`);

/**
 * The real path of p: symlinks resolved in the part that exists, the rest appended as it is. A dangling
 * symlink on the way throws: where it points cannot be checked, and creating through it would write there.
 */
function realpathExisting(p: string): string {
  const rest: string[] = [];
  let cur = p;
  for (;;) {
    try {
      return path.join(fs.realpathSync(cur), ...rest.reverse());
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const up = path.dirname(cur);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || up === cur || isSymlink(cur)) throw e;
      rest.push(path.basename(cur));
      cur = up;
    }
  }
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** The mount points below root and whether each is read-write (/proc/self/mountinfo). */
export function volumeMounts(root: string, mountinfo: string): { mountPoint: string; rw: boolean }[] {
  const out: { mountPoint: string; rw: boolean }[] = [];
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length < 6) continue;
    const mountPoint = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) =>
      String.fromCharCode(Number.parseInt(o, 8)),
    );
    if (mountPoint !== root && within(root, mountPoint))
      out.push({ mountPoint, rw: f[5]!.split(',').includes('rw') });
  }
  return out;
}

/** The filesystem side of the filter for one session, rooted at `root` (a real path). */
export function confinement(root: string, readWrite: boolean, mountinfo: () => string): Confinement {
  const realRoot = fs.realpathSync(root);
  return {
    readWrite,
    resolve(p, follow) {
      const abs = path.resolve(realRoot, p);
      if (!within(realRoot, abs)) return undefined;
      let real: string;
      try {
        real =
          follow || abs === realRoot
            ? realpathExisting(abs)
            : path.join(realpathExisting(path.dirname(abs)), path.basename(abs));
      } catch {
        return undefined;
      }
      return within(realRoot, real) ? real : undefined;
    },
    writable(real) {
      // The volume the path is on: the longest mount point above it (none: the agent's own directories).
      let best: { mountPoint: string; rw: boolean } | undefined;
      for (const m of volumeMounts(realRoot, mountinfo()))
        if (within(m.mountPoint, real) && (!best || m.mountPoint.length > best.mountPoint.length)) best = m;
      return best?.rw === true;
    },
  };
}

/**
 * Runs sftp-server behind the filter: returns our end of a socket pair whose other end the filter
 * reads requests from (forwarding the allowed ones to sftp-server's stdin, answering the others itself)
 * and writes sftp-server's answers to, whole packets each.
 */
export async function filteredSftpServer(
  sftpServer: string,
  root: string,
  c: Confinement,
  log: Logger,
): Promise<net.Socket> {
  const [ours, theirs] = await socketPair();
  const child = spawn(sftpServer, sftpServerArgs(root, c.readWrite), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 8192) stderr += d.toString('utf8');
  });
  const stop = (why?: string) => {
    if (why) log.warn('mount session ended', { root, reason: why });
    if (child.exitCode === null) child.kill('SIGTERM');
    theirs.destroy();
  };
  child.once('error', (e) => {
    stderr += e.message;
    stop(`${sftpServer}: ${e.message}`);
  });
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal === null)
      log.warn('sftp-server failed', { root, code, stderr: stderr.trim() || undefined });
    else log.debug('sftp-server ended', { root, code, signal });
  });
  const fromClient = new PacketSplitter();
  const fromServer = new PacketSplitter();
  const toClient = (b: Buffer) => {
    if (!theirs.write(b)) {
      child.stdout.pause();
      theirs.once('drain', () => child.stdout.resume());
    }
  };
  theirs.on('data', (chunk: Buffer) => {
    let packets: Buffer[];
    try {
      packets = fromClient.push(chunk);
    } catch (e) {
      return stop((e as Error).message);
    }
    for (const p of packets) {
      const req = classify(p.subarray(4));
      const refusal = decide(req, c);
      if (refusal && req.kind !== 'pass') {
        log.info('mount request refused', { root, reason: refusal.message });
        toClient(statusPacket(req.id, refusal.code, refusal.message));
      } else if (!child.stdin.write(p)) {
        theirs.pause();
        child.stdin.once('drain', () => theirs.resume());
      }
    }
  });
  theirs.on('end', () => child.stdin.end());
  theirs.on('error', () => stop());
  theirs.on('close', () => stop());
  child.stdin.on('error', () => stop());
  child.stdout.on('data', (chunk: Buffer) => {
    let packets: Buffer[];
    try {
      packets = fromServer.push(chunk);
    } catch (e) {
      return stop((e as Error).message);
    }
    for (const p of packets) toClient(p);
  });
  child.stdout.on('end', () => theirs.end());
  return ours;
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

/** The dialer of one mount flow: a filtered sftp-server on a socket pair. */
export function sftpDialer(
  root: string,
  readWrite: boolean,
  sftpServer: string,
  log: Logger,
  mountinfo = () => fs.readFileSync('/proc/self/mountinfo', 'utf8'),
): Dialer {
  return () => filteredSftpServer(sftpServer, root, confinement(root, readWrite, mountinfo), log);
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
      : sftpDialer(where.root, req.readWrite, options.sftpServer ?? SFTP_SERVER, log);
  log.info('serving a mount', {
    intercept: req.interceptId,
    container: req.container,
    access: req.readWrite ? 'read-write' : 'read-only',
  });
  void serveDial(stream, info, dialer, { log }).then((o) => {
    if (o.kind === 'rejected') log.warn('mount refused', { intercept: req.interceptId, reason: o.reason });
    else log.info('mount ended', { flow: formatConnectionId(req.connId), outcome: o.kind });
  });
}
