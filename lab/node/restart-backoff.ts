// The kubelet's crash-loop back-off (flowcontrol.Backoff as kuberuntime's doBackOff uses it): the
// first restart is immediate; after that a container that finished at F restarts at F + d, where d
// starts at 10 s and doubles per restart up to 5 min, and starts over when the container last ran
// more than twice the maximum (10 min) before. Pure.

export const INITIAL_BACKOFF_MS = 10_000;
export const MAX_BACKOFF_MS = 300_000;

export class RestartBackoff {
  private entry: { durationMs: number; lastUpdate: number } | undefined;

  constructor(
    private readonly initialMs = INITIAL_BACKOFF_MS,
    private readonly maxMs = MAX_BACKOFF_MS,
  ) {}

  private expired(finishedAt: number): boolean {
    return this.entry === undefined || finishedAt - this.entry.lastUpdate > 2 * this.maxMs;
  }

  /** When a container that finished at `finishedAt` may restart; undefined: now. */
  restartAt(finishedAt: number, now: number): number | undefined {
    if (this.expired(finishedAt)) return undefined;
    const until = finishedAt + this.entry!.durationMs;
    return now < until ? until : undefined;
  }

  /** Call when restarting a container that finished at `finishedAt`. */
  recordRestart(finishedAt: number): void {
    if (this.expired(finishedAt)) this.entry = { durationMs: this.initialMs, lastUpdate: finishedAt };
    else {
      this.entry!.durationMs = Math.min(this.entry!.durationMs * 2, this.maxMs);
      this.entry!.lastUpdate = finishedAt;
    }
  }

  /** The current back-off in seconds (for the CrashLoopBackOff message). */
  get seconds(): number {
    return Math.round((this.entry?.durationMs ?? 0) / 1000);
  }
}
