// Which workloads a watcher may see, for the Watch* snapshots (built synchronously on every change) on
// top of an asynchronous question per (namespace, kind): "may this user list them?". Answers are kept for
// a while; a pair never asked is hidden until its answer comes, and then the snapshot is sent again. A
// one-shot listing (tp list) asks for everything it will show first (prefetch).
export const VISIBILITY_TTL_MS = 30_000;

interface Answer {
  visible: boolean;
  at: number;
  asking: boolean;
}

export class WorkloadVisibility {
  private readonly answers = new Map<string, Answer>();
  private closed = false;

  constructor(
    private readonly may: (namespace: string, kind: string) => Promise<boolean>,
    /** Called when an answer changed what is visible: send the snapshot again. */
    private readonly changed: () => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Asks about every pair not known yet and waits for the answers. */
  async prefetch(pairs: { namespace: string; kind: string }[]): Promise<void> {
    await Promise.all(pairs.map((p) => this.ask(p.namespace, p.kind)));
  }

  /** The answer known now; unknown or stale pairs are asked about in the background. */
  visible(namespace: string, kind: string): boolean {
    const a = this.answers.get(key(namespace, kind));
    if (!a || this.now() - a.at > VISIBILITY_TTL_MS) void this.ask(namespace, kind);
    return a?.visible ?? false;
  }

  /** The watcher went away: no more questions, no more change notices. */
  close(): void {
    this.closed = true;
  }

  private async ask(namespace: string, kind: string): Promise<void> {
    const k = key(namespace, kind);
    const before = this.answers.get(k);
    if (before?.asking || this.closed) return;
    if (before && this.now() - before.at <= VISIBILITY_TTL_MS) return;
    const entry: Answer = before ?? { visible: false, at: 0, asking: true };
    entry.asking = true;
    this.answers.set(k, entry);
    let visible = false;
    try {
      visible = await this.may(namespace, kind);
    } catch {
      visible = false;
    }
    // Hidden while unanswered: only a visible answer changes what the watcher saw.
    const changed = entry.visible !== visible;
    entry.visible = visible;
    entry.at = this.now();
    entry.asking = false;
    if (changed && !this.closed) this.changed();
  }
}

const key = (namespace: string, kind: string) => `${namespace}\u0000${kind}`;
