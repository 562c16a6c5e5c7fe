// A small TTL cache for the cluster's answers. Concurrent misses for the same key share one lookup, so a
// burst of identical queries (A and AAAA from every getaddrinfo, retries) costs one round trip.
//
// Serve-stale (RFC 8767): an expired answer is kept for `staleMs` more, and given out only when the
// lookup that should refresh it fails (the traffic manager restarting, the port-forward broken), with a
// short TTL. A name that resolved a moment ago keeps resolving through a short outage instead of every
// client's lookup failing. Once a refresh has failed, the expired answer is given at once for a while (the
// RFC's failure recheck timer), not after the client response timer again: a stub resolver with a short
// timeout (glibc's `options timeout:1`) would give up first.

import { within } from '../command/wait.js';

export interface CacheOptions {
  /** Upper bound of any entry's life (answers from the cluster change when pods move). */
  maxTtlMs: number;
  /** Entries kept; the oldest go first. */
  maxEntries: number;
  /** How long past its expiry an entry may still answer when the lookup fails (0: never). */
  staleMs?: number;
  /** The TTL of a stale answer (RFC 8767 suggests 30 s; cluster answers change, so shorter). */
  staleAnswerMs?: number;
  /**
   * RFC 8767's client response timer: with an expired entry at hand, a lookup that has not answered within
   * this long (counted from its start, which concurrent callers share) gives the expired entry at once,
   * and its answer, when it comes, still goes into the cache. Unset: wait for the lookup.
   */
  staleAfterMs?: number;
  /**
   * RFC 8767's failure recheck timer: for this long after a lookup to refresh an entry failed, the expired
   * entry is given at once, without waiting staleAfterMs. Unlike the RFC (which asks nobody meanwhile) a
   * lookup still goes on behind it, one at a time, so the entry is fresh again as soon as the cluster
   * answers: pods move, and a lookup through the manager is cheap. Unset: every query waits staleAfterMs.
   */
  failureRecheckMs?: number;
  now?: () => number;
}

/** A cached value; `stale` when it expired and the lookup to refresh it failed. */
export interface Cached<V> {
  value: V;
  remainingMs: number;
  stale?: boolean;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
  /** When a lookup to refresh it last failed (the failure recheck timer's start). */
  refreshFailedAt?: number;
}

export class TtlCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly inflight = new Map<
    string,
    { loaded: Promise<{ value: V; ttlMs: number }>; startedAt: number }
  >();
  private readonly now: () => number;

  constructor(private readonly options: CacheOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The value and the ms it has left, or undefined when absent or expired. */
  get(key: string): Cached<V> | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    const remainingMs = e.expiresAt - this.now();
    if (remainingMs <= 0) {
      if (-remainingMs >= (this.options.staleMs ?? 0)) this.entries.delete(key);
      return undefined;
    }
    return { value: e.value, remainingMs };
  }

  /** An expired entry still within its stale window, as a stale answer. */
  private stale(key: string): Cached<V> | undefined {
    const e = this.entries.get(key);
    if (!e || this.now() - e.expiresAt >= (this.options.staleMs ?? 0)) return undefined;
    return { value: e.value, remainingMs: this.options.staleAnswerMs ?? 5_000, stale: true };
  }

  set(key: string, value: V, ttlMs: number): void {
    const ttl = Math.min(ttlMs, this.options.maxTtlMs);
    if (ttl <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, { value, expiresAt: this.now() + ttl });
    while (this.entries.size > this.options.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /**
   * The cached value, else the result of lookup() (shared by concurrent callers), cached for its ttl; when
   * the lookup fails, an expired value within its stale window, else the lookup's error.
   */
  async getOrLoad(key: string, lookup: () => Promise<{ value: V; ttlMs: number }>): Promise<Cached<V>> {
    const hit = this.get(key);
    if (hit) return hit;
    let pending = this.inflight.get(key);
    if (!pending) {
      const loaded = lookup()
        .then((l) => {
          this.set(key, l.value, l.ttlMs);
          return l;
        })
        .catch((e) => {
          const entry = this.entries.get(key);
          if (entry) entry.refreshFailedAt = this.now();
          throw e;
        })
        .finally(() => this.inflight.delete(key));
      // Nobody may be waiting for it any more (they had the stale answer): its failure is theirs to see.
      loaded.catch(() => {});
      pending = { loaded, startedAt: this.now() };
      this.inflight.set(key, pending);
    }
    const failedAt = this.entries.get(key)?.refreshFailedAt;
    const recheck = this.options.failureRecheckMs;
    if (failedAt !== undefined && recheck !== undefined && this.now() - failedAt < recheck) {
      const s = this.stale(key);
      if (s) return s; // the lookup above goes on and refreshes the entry when it answers
    }
    const after = this.options.staleAfterMs;
    const stale = after !== undefined ? this.stale(key) : undefined;
    try {
      const loaded = stale
        ? await within(pending.loaded, Math.max(0, pending.startedAt + after! - this.now()))
        : await pending.loaded;
      if (loaded === undefined) return stale!;
      return { value: loaded.value, remainingMs: Math.min(loaded.ttlMs, this.options.maxTtlMs) };
    } catch (e) {
      const s = this.stale(key);
      if (s) return s;
      throw e;
    }
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
