// Reaping orphans in tp-agent-holder. PID 1 of a container adopts every process in it whose parent died,
// and must wait() for it when it exits, or it stays a zombie (an entry in the process table, the pid taken)
// until the container ends. Node reaps only the children it started (libuv waits for those pids), so the
// sftp-servers of a worker that died (remote mounts, agent/file-server.ts) used to end as zombies of the
// holder, one per mount per worker death.
//
// On SIGCHLD, and every 10 s in case one was coalesced: waitid(P_ALL, WNOWAIT) peeks at the first child
// that has exited; one the holder did not start is reaped with waitpid(pid). Its own children (the worker)
// are left to libuv, which reports their exit to the holder, so a peek that finds one stops the sweep. Run
// anywhere but as PID 1 (a pod with shareProcessNamespace, a test), the holder makes itself the child
// subreaper, so the worker's orphans come to it all the same.
import type { Logger } from '../logging/logger.js';
import { loadLibc } from '../sys/libc.js';

const P_ALL = 0;
const WNOHANG = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
const PR_SET_CHILD_SUBREAPER = 36;
/** sizeof(siginfo_t), and where si_pid sits in it (after si_signo, si_errno, si_code and padding). */
const SIGINFO_BYTES = 128;
const SI_PID_OFFSET = 16;
/** At most this many per sweep: the next SIGCHLD or the timer takes the rest. */
const MAX_PER_SWEEP = 64;
const SWEEP_EVERY_MS = 10_000;

export interface ZombieReaper {
  /** Reaps what has exited now; returns the pids reaped. */
  sweep(): number[];
  stop(): void;
}

/**
 * Starts reaping orphans; `isOwnChild(pid)` names the children Node started (left to libuv). Undefined,
 * with a warning, when libc cannot be loaded: the holder runs on, and orphans stay zombies as before.
 */
export function startReaper(o: {
  isOwnChild: (pid: number) => boolean;
  log: Logger;
  sweepEveryMs?: number;
}): ZombieReaper | undefined {
  let waitid: (...a: unknown[]) => number;
  let waitpid: (...a: unknown[]) => number;
  try {
    const libc = loadLibc();
    waitid = libc.func('int waitid(int idtype, int id, _Out_ uint8_t *infop, int options)');
    waitpid = libc.func('int waitpid(int pid, _Out_ int *status, int options)');
    if (process.pid !== 1) {
      const prctl = libc.func(
        'int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)',
      );
      if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) !== 0)
        o.log.warn('cannot become the child subreaper: orphans of the worker go to PID 1');
    }
  } catch (e) {
    o.log.warn(
      'cannot load libc (koffi) to reap orphaned processes: they stay zombies until the container ends',
      {
        error: (e as Error).message,
      },
    );
    return undefined;
  }
  const info = Buffer.alloc(SIGINFO_BYTES);
  const status = [0];
  const sweep = (): number[] => {
    const reaped: number[] = [];
    for (let i = 0; i < MAX_PER_SWEEP; i++) {
      info.fill(0);
      // -1 (ECHILD): no children at all.
      if (waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT) !== 0) break;
      const pid = info.readInt32LE(SI_PID_OFFSET);
      if (pid === 0 || o.isOwnChild(pid)) break;
      if (waitpid(pid, status, WNOHANG) !== pid) break;
      reaped.push(pid);
    }
    if (reaped.length > 0) o.log.info('reaped orphaned processes', { pids: reaped.join(',') });
    return reaped;
  };
  const onChild = () => {
    sweep();
  };
  process.on('SIGCHLD', onChild);
  const timer = setInterval(onChild, o.sweepEveryMs ?? SWEEP_EVERY_MS);
  timer.unref();
  return {
    sweep,
    stop() {
      process.off('SIGCHLD', onChild);
      clearInterval(timer);
    },
  };
}
