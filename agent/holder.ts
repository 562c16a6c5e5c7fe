// tp-agent-holder: PID 1 of the agent container. It binds the agent's listening sockets (every agent port
// and the probe port) and runs the agent as its child, the worker, which inherits them (TP_LISTEN_FDS, as
// systemd socket activation hands sockets over). When the worker dies the sockets stay open and listening
// in the holder, so the capture's new connections wait in the listen backlog instead of being refused, and
// the holder starts a new worker at once (restart-policy in holder-policy.ts). The holder never accepts a
// connection itself: it only binds; the worker's listen() puts the socket in the listening state, which
// belongs to the socket and so outlives the worker's fd.
//
// Kept small (a second Node process in the container): this file, holder-policy.ts, reaper.ts (with koffi,
// for waitpid), the logger and netaddr/parse.ts are all it loads (dist/bundle/tp-agent-holder.cjs).
import { type ChildProcess, spawn } from 'node:child_process';
import * as net from 'node:net';
import { constants } from 'node:os';
import { getSystemErrorName } from 'node:util';
import type { Logger } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import {
  describeExit,
  exitCodeOf,
  formatListenFds,
  LISTEN_FDS_VARIABLE,
  RestartPolicy,
  type RestartPolicyOptions,
} from './holder-policy.js';
import { startReaper } from './reaper.js';

/** A bound socket: the handle libuv made, which Node's cluster module also makes before its workers listen. */
interface BoundHandle {
  readonly fd: number;
  getsockname(out: { address?: string; port?: number }): number;
  close(): void;
}
type CreateServerHandle = (
  address: string,
  port: number,
  addressType: 4 | 6,
  fd: undefined,
  flags: number,
) => BoundHandle | number;

export interface HeldSocket {
  port: number;
  what: string;
  address: string;
  fd: number;
  close(): void;
}

/**
 * Binds `port` (not listening: the worker's listen() does that, and the holder's event loop must never
 * accept): on `listenAddress`, else dual-stack `::`, else `0.0.0.0` where the namespace has no IPv6 —
 * the same choice as listen.ts.
 */
export function bindSocket(port: number, listenAddress: string, what: string): HeldSocket {
  const create = (net as unknown as { _createServerHandle: CreateServerHandle })._createServerHandle;
  const hosts = listenAddress ? [listenAddress] : ['::', '0.0.0.0'];
  let code = 'unknown error';
  for (const host of hosts) {
    const h = create(host, port, net.isIPv6(host) ? 6 : 4, undefined, 0);
    if (typeof h !== 'number') {
      // libuv keeps EADDRINUSE from bind() for listen() to report, and a listen() on the unbound socket
      // would take a random port: the socket must have the port now.
      const bound: { port?: number } = {};
      if (h.getsockname(bound) === 0 && bound.port === port)
        return { port, what, address: host, fd: h.fd, close: () => h.close() };
      h.close();
      code = 'EADDRINUSE';
      break;
    }
    code = getSystemErrorName(h);
    if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') break;
  }
  throw new UsageError(`cannot listen on ${what}: ${code === 'EADDRINUSE' ? 'the port is in use' : code}`);
}

export interface HolderOptions {
  /** The worker's command line: tp-agent (its launcher in tp's image). */
  command: string[];
  sockets: HeldSocket[];
  log: Logger;
  policy?: RestartPolicyOptions;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs workers until one is asked to stop (SIGTERM/SIGINT, forwarded; the holder then exits with the
 * worker's code) or the restart policy gives up (the holder exits with the last worker's code). SIGUSR2
 * is forwarded (the agent's counters).
 */
export function runHolder(o: HolderOptions): void {
  const policy = new RestartPolicy(o.policy);
  const fds = new Map(o.sockets.map((s, i) => [s.port, 3 + i]));
  const env = { ...(o.env ?? process.env), [LISTEN_FDS_VARIABLE]: formatListenFds(fds) };
  const stdio = ['inherit', 'inherit', 'inherit', ...o.sockets.map((s) => s.fd)] as const;
  let worker: ChildProcess | undefined;
  let stopping: NodeJS.Signals | undefined;
  let pending: NodeJS.Timeout | undefined;

  const exit = (code: number) => {
    for (const s of o.sockets) s.close();
    process.exit(code);
  };
  const start = () => {
    pending = undefined;
    const [file, ...args] = o.command as [string, ...string[]];
    const child = spawn(file, args, { stdio: [...stdio], env });
    worker = child;
    child.once('spawn', () => o.log.info('agent worker started', { pid: child.pid }));
    child.once('error', (e) => {
      // Not started at all (the command is missing): no restart will help.
      if (child.pid !== undefined) return;
      o.log.error(`cannot start the agent worker ${o.command.join(' ')}: ${e.message}`);
      exit(1);
    });
    child.once('exit', (code, signal) => {
      worker = undefined;
      const how = describeExit(code, signal);
      const status = exitCodeOf(code, signal ? constants.signals[signal] : undefined);
      if (stopping) {
        o.log.info('agent worker stopped', { pid: child.pid, exit: how });
        exit(status);
        return;
      }
      const d = policy.died(Date.now());
      if (d.action === 'give-up') {
        o.log.error(
          'the agent worker keeps dying: stopping, so that the kubelet restarts the container and the pod shows it',
          { pid: child.pid, exit: how, deathsInWindow: d.deathsInWindow },
        );
        exit(status);
        return;
      }
      o.log.warn('the agent worker died: connections wait in the listen backlog while it starts again', {
        pid: child.pid,
        exit: how,
        deathsInWindow: d.deathsInWindow,
        restartInMs: d.delayMs,
      });
      pending = setTimeout(start, d.delayMs);
    });
  };
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = signal;
    if (pending) clearTimeout(pending);
    if (worker) worker.kill(signal);
    else exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGUSR2', () => worker?.kill('SIGUSR2'));
  // PID 1 adopts the worker's orphans (its sftp-servers, when it dies): reap them (reaper.ts).
  startReaper({ isOwnChild: (pid) => pid === worker?.pid, log: o.log });
  start();
}
