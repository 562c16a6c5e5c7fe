// Starting and stopping the root daemon, for `tp connect` / `tp quit` (the user daemon or the CLI calls
// these; the integration is a few lines):
//
//   const daemon = await startRootDaemon({ interactive: process.stdin.isTTY });
//   const status = await connectRootDaemon(daemon.client, { managerAddress, sessionId, namespace, cluster, … });
//   …
//   await stopRootDaemon();
//
// As root the daemon is started directly; otherwise through sudo, prompting for the password when the
// caller has a terminal (`interactive`), else only if sudo needs no password. A running daemon that
// answers on the socket is reused.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { logDir } from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import type { DaemonStatus } from '../../rpc/gen/connector.js';
import { type ConnectRequest, DaemonClient } from '../../rpc/gen/daemon.js';
import { localChannelOptions } from '../../rpc/grpc-options.js';
import { errorDetails, unary } from '../../rpc/unary-call.js';

export const DEFAULT_ROOT_DAEMON_SOCKET = '/var/run/tp-root-daemon.socket';

/**
 * The root daemon's socket: $TP_ROOT_DAEMON_SOCKET, else /var/run/tp-root-daemon.socket. The variable (and
 * $TP_ROOT_DAEMON_STATE_DIR for its state directory) keeps apart the root daemons of several network
 * namespaces on one machine that share a filesystem (the lab's workstation namespace, tests).
 */
export function rootDaemonSocketPath(): string {
  return process.env.TP_ROOT_DAEMON_SOCKET || DEFAULT_ROOT_DAEMON_SOCKET;
}

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');
/**
 * TP_VIF_KERNEL_NAT=0 starts the root daemon with `--kernel-nat off`: the VIF's packet worker rewrites every
 * packet (vif/kernel-nat.ts), to compare or to rule the kernel's part out.
 */
export const KERNEL_NAT_ENV = 'TP_VIF_KERNEL_NAT';
/** Node flags the root daemon runs with (see startRootDaemon). */
export const ROOT_DAEMON_NODE_FLAGS = ['--single-threaded-gc'];
const SUDO_PROMPT =
  'tp connect: the root daemon creates a network interface and routes and needs administrator rights.\n' +
  '[sudo] password for %u: ';

export interface RootDaemonLaunch {
  socketPath?: string;
  /** Where daemon.log goes (default: this user's log directory). */
  logDir?: string;
  stateDir?: string;
  /** More flags for the daemon: --dns-mode, --vif-name, --mtu, --resolv-conf, --log-level. */
  extraArgs?: string[];
  /** A command the daemon runs under, e.g. ["ip", "netns", "exec", "NAME"] (tests, the lab). */
  wrap?: string[];
  /** The caller has a terminal: sudo may prompt for a password on it. */
  interactive?: boolean;
  timeoutMs?: number;
}

export interface RootDaemonHandle {
  socketPath: string;
  client: DaemonClient;
  /** The daemon's pid when this call started it as root (not through sudo); undefined otherwise. */
  pid: number | undefined;
  /** Closes the client channel (the daemon keeps running). */
  close(): void;
}

export type LaunchPlan = { kind: 'direct' } | { kind: 'sudo'; sudo: string };

/** How the daemon can be started by this user; a clear error when it cannot. */
export function planLaunch(o: { uid: number; sudo: string | undefined }): LaunchPlan {
  if (o.uid === 0) return { kind: 'direct' };
  if (!o.sudo)
    throw new UsageError(
      'the VIF needs root for its network interface, and sudo is not installed: run tp connect as root, install sudo, or connect with --no-vif',
    );
  return { kind: 'sudo', sudo: o.sudo };
}

function findSudo(): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(dir, 'sudo');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function rootDaemonClient(socketPath = rootDaemonSocketPath()): DaemonClient {
  return new DaemonClient(`unix:${socketPath}`, grpc.credentials.createInsecure(), localChannelOptions());
}

async function answers(client: DaemonClient, timeoutMs: number): Promise<boolean> {
  try {
    await unary((md, opts, cb) => client.version({}, md, opts, cb), timeoutMs);
    return true;
  } catch {
    return false;
  }
}

/** The root daemon that answers on its socket now, or undefined (none runs, or a dead one's socket). */
export async function runningRootDaemon(
  socketPath = rootDaemonSocketPath(),
): Promise<RootDaemonHandle | undefined> {
  if (!fs.existsSync(socketPath)) return undefined;
  const client = rootDaemonClient(socketPath);
  if (await answers(client, 1_000))
    return { socketPath, client, pid: undefined, close: () => client.close() };
  client.close();
  return undefined;
}

/** Starts the root daemon (or finds the running one) and waits until it answers. */
export async function startRootDaemon(o: RootDaemonLaunch = {}): Promise<RootDaemonHandle> {
  const socketPath = o.socketPath ?? rootDaemonSocketPath();
  const client = rootDaemonClient(socketPath);
  const handle = (pid: number | undefined): RootDaemonHandle => ({
    socketPath,
    client,
    pid,
    close: () => client.close(),
  });
  if (fs.existsSync(socketPath) && (await answers(client, 1_000))) return handle(undefined);

  const plan = planLaunch({ uid: process.getuid?.() ?? 0, sudo: findSudo() });
  const dir = o.logDir ?? logDir();
  fs.mkdirSync(dir, { recursive: true });
  // --single-threaded-gc: V8's parallel GC helpers measured ~40% of the daemon's CPU per GB moved (two
  // isolates, main and packet worker, churning 64 KiB-1 MiB buffers) for no gain; without them the same
  // transfer takes 2.5-3 instead of 4-4.7 CPU-seconds per GB and runs faster on a busy machine.
  // `--` before the script: the daemon's flags are never Node's (Node 20 reads --env-file anywhere).
  const args = [
    process.execPath,
    ...ROOT_DAEMON_NODE_FLAGS,
    '--',
    MAIN,
    '--socket',
    socketPath,
    '--log-dir',
    dir,
  ];
  // sudo drops the environment: the switch goes as a flag.
  if (process.env[KERNEL_NAT_ENV] === '0') args.push('--kernel-nat', 'off');
  const stateDir = o.stateDir ?? process.env.TP_ROOT_DAEMON_STATE_DIR;
  if (stateDir) args.push('--state-dir', stateDir);
  args.push(...(o.extraArgs ?? []));

  let command: string[];
  if (plan.kind === 'sudo') {
    // Ask for the password once, on the terminal; the daemon itself starts without a prompt.
    if (o.interactive) {
      const v = spawnSync(plan.sudo, ['-v', '-p', SUDO_PROMPT], { stdio: 'inherit' });
      if (v.status !== 0)
        throw new UsageError('sudo did not grant administrator rights: tp connect needs them for the VIF');
    } else if (spawnSync(plan.sudo, ['-n', 'true'], { stdio: 'ignore' }).status !== 0) {
      throw new UsageError(
        'the VIF needs root for its network interface and sudo asks for a password, but there is no terminal to ask on: run tp connect in a terminal (or `sudo -v` first)',
      );
    }
    // -b: sudo forks the daemon into the background itself, after its credential check on this terminal.
    command = [...(o.wrap ?? []), plan.sudo, '-n', '-b', '--', ...args];
  } else command = [...(o.wrap ?? []), ...args];

  // The daemon's stderr goes to a file, never to a pipe that closes when this process exits.
  const errFile = path.join(dir, 'root-daemon.stderr');
  const errFd = fs.openSync(errFile, 'w', 0o600);
  let exited: { code: number | null } | undefined;
  const child = spawn(command[0]!, command.slice(1), { detached: true, stdio: ['ignore', 'ignore', errFd] });
  fs.closeSync(errFd);
  child.on('exit', (code) => {
    exited = { code };
  });
  child.on('error', (e) => {
    exited = { code: -1 };
    fs.appendFileSync(errFile, e.message);
  });
  child.unref();

  const deadline = Date.now() + (o.timeoutMs ?? 15_000);
  for (;;) {
    if (fs.existsSync(socketPath) && (await answers(client, 500))) break;
    // sudo -b exits at once on success; a direct child exiting means the daemon is gone.
    const failed = exited && (plan.kind === 'direct' || exited.code !== 0);
    if (failed || Date.now() > deadline) {
      client.close();
      const reason = fs.readFileSync(errFile, 'utf8').trim().split('\n').pop() || 'no message';
      throw new UsageError(
        failed
          ? `the root daemon did not start: ${reason.replace(/^tp root daemon: /, '')}`
          : `the root daemon did not answer on ${socketPath} within ${o.timeoutMs ?? 15_000} ms (see ${path.join(dir, 'daemon.log')})`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return handle(plan.kind === 'direct' ? child.pid : undefined);
}

/** Brings up the VIF for a session; errors carry the daemon's message (a conflict, a bad CIDR…). */
export async function connectRootDaemon(
  client: DaemonClient,
  req: Partial<ConnectRequest>,
): Promise<DaemonStatus> {
  const full: ConnectRequest = {
    managerAddress: '',
    sessionId: '',
    namespace: '',
    cluster: undefined,
    alsoProxy: [],
    neverProxy: [],
    allowConflictingSubnets: false,
    keepOut: [],
    ownerPid: 0,
    sessionCredential: '',
    clusterAccess: undefined,
    ...req,
  };
  try {
    return await unary<DaemonStatus>((md, opts, cb) => client.connect(full, md, opts, cb), 60_000);
  } catch (e) {
    throw new UsageError(errorDetails(e));
  }
}

export async function rootDaemonStatus(client: DaemonClient): Promise<DaemonStatus> {
  return unary<DaemonStatus>((md, opts, cb) => client.status({}, md, opts, cb), 5_000);
}

/**
 * Asks the daemon to undo everything and exit, and waits until its socket is gone. A daemon that is not
 * running is fine.
 */
export async function stopRootDaemon(socketPath = rootDaemonSocketPath(), timeoutMs = 15_000): Promise<void> {
  if (!fs.existsSync(socketPath)) return;
  const client = rootDaemonClient(socketPath);
  try {
    await unary((md, opts, cb) => client.quit({}, md, opts, cb), 5_000);
  } catch {
    client.close();
    return; // not answering: nothing to stop (the next start clears its leftovers)
  }
  client.close();
  const deadline = Date.now() + timeoutMs;
  while (fs.existsSync(socketPath)) {
    if (Date.now() > deadline) throw new Error(`the root daemon did not stop within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
