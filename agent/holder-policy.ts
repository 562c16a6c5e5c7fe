// The agent holder's pure parts (holder.ts runs them): when a dead worker is started again, and how the
// listening sockets it holds are handed to the worker (TP_LISTEN_FDS).
import { parsePort, UsageError } from '../netaddr/parse.js';

export interface RestartPolicyOptions {
  /** Deaths counted within this window (ms). */
  windowMs: number;
  /** This many deaths within the window and the holder gives up (exits), so the kubelet's backoff shows it. */
  maxDeaths: number;
  /** The delay before the second start in the window; it doubles per further death, up to capMs. */
  baseDelayMs: number;
  capMs: number;
}

/** 5 deaths within a minute: a crash loop, for the kubelet's CrashLoopBackOff and the pod status to show. */
export const DEFAULT_RESTART_POLICY: RestartPolicyOptions = {
  windowMs: 60_000,
  maxDeaths: 5,
  baseDelayMs: 250,
  capMs: 2_000,
};

export type RestartDecision =
  | { action: 'restart'; delayMs: number; deathsInWindow: number }
  | { action: 'give-up'; deathsInWindow: number };

/**
 * The worker's deaths and what to do after each: the first in the window is restarted at once (that is
 * the point of the holder: connections wait in the listen backlog meanwhile), later ones after a doubling
 * delay, and the maxDeaths-th ends the holder.
 */
export class RestartPolicy {
  private deaths: number[] = [];

  constructor(private readonly o: RestartPolicyOptions = DEFAULT_RESTART_POLICY) {}

  /** The worker died at `now` (ms): restart it after delayMs, or give up. */
  died(now: number): RestartDecision {
    this.deaths = this.deaths.filter((t) => now - t < this.o.windowMs);
    this.deaths.push(now);
    const n = this.deaths.length;
    if (n >= this.o.maxDeaths) return { action: 'give-up', deathsInWindow: n };
    const delayMs = n === 1 ? 0 : Math.min(this.o.capMs, this.o.baseDelayMs * 2 ** (n - 2));
    return { action: 'restart', delayMs, deathsInWindow: n };
  }
}

/** How a worker ended, in words for the log: "exit code 1", "signal SIGKILL". */
export function describeExit(code: number | null, signal: string | null): string {
  return signal ? `signal ${signal}` : `exit code ${code ?? 'unknown'}`;
}

/**
 * The holder's exit code when it gives up or follows its worker out: the worker's, or 128 + the signal's
 * number as a shell reports it.
 */
export function exitCodeOf(code: number | null, signalNumber: number | undefined): number {
  if (code !== null) return code;
  return signalNumber !== undefined ? 128 + signalNumber : 1;
}

/** TP_LISTEN_FDS: the listening sockets the worker inherits, `port=fd[,port=fd…]` (e.g. `15001=3,15021=4`). */
export const LISTEN_FDS_VARIABLE = 'TP_LISTEN_FDS';

export function formatListenFds(fds: ReadonlyMap<number, number>): string {
  return [...fds].map(([port, fd]) => `${port}=${fd}`).join(',');
}

export function parseListenFds(text: string | undefined): Map<number, number> {
  const out = new Map<number, number>();
  for (const item of (text ?? '').split(',')) {
    if (!item.trim()) continue;
    const m = /^\s*(\d+)=(\d+)\s*$/.exec(item);
    if (!m || Number(m[2]) < 3)
      throw new UsageError(
        `${LISTEN_FDS_VARIABLE}: "${item}" is not port=fd (fd 3 or above): it is set by tp-agent-holder, unset it to let the agent listen itself`,
      );
    out.set(parsePort(m[1]!, LISTEN_FDS_VARIABLE), Number(m[2]));
  }
  return out;
}
