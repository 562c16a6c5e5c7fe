// A child process that speaks on its stdin/stdout (sftp-server in the agent, sshfs -o passive on the
// workstation) as one end of a connected socket, so a tunnel flow pumps it like any TCP connection:
// half-close, reset and backpressure included.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export interface ProcessSocket {
  child: ChildProcess;
  /** Our end: what the child writes to stdout arrives here, what is written here is the child's stdin. */
  socket: net.Socket;
  /** The child's stderr, up to 8 KiB (for the reason when it fails). */
  stderr(): string;
}

/**
 * A connected pair of unix stream sockets, both half-close enabled: [ours, theirs]. Made through a unix
 * socket in a fresh 0700 directory (removed at once), so nothing else can connect in between.
 */
export async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-pair-'));
  const file = path.join(dir, 's');
  const server = net.createServer({ allowHalfOpen: true });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const theirs = net.connect({ path: file, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      theirs.once('connect', resolve);
      theirs.once('error', reject);
    });
    const ours = await accepted;
    // A unix socket has no RST, and net.Socket.resetAndDestroy() throws on one (ERR_INVALID_HANDLE_TYPE):
    // a flow reset by the far side (tunnel/flow.ts) would crash the process. Here a reset is a destroy.
    ours.resetAndDestroy = function (this: net.Socket) {
      return this.destroy();
    };
    return [ours, theirs];
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function spawnOnSocket(command: string, args: string[]): Promise<ProcessSocket> {
  const [ours, theirs] = await socketPair();
  let child: ChildProcess;
  try {
    child = spawn(command, args, { stdio: [theirs, theirs, 'pipe'] });
  } finally {
    // The child holds its own copy of the descriptor.
    theirs.destroy();
  }
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 8192) stderr += d.toString('utf8');
  });
  // A child that cannot start (ENOENT) or dies ends our socket: the flow sees the end.
  child.once('error', (e) => {
    stderr += `${command}: ${e.message}`;
    ours.destroy();
  });
  child.once('exit', () => ours.end());
  return { child, socket: ours, stderr: () => stderr.trim() };
}
