// A small TTL cache for the cluster's answers. Concurrent misses for the same key share one lookup, so a
// burst of identical queries (A and AAAA from every getaddrinfo, retries) costs one round trip.

export interface CacheOptions {
  /** Upper bound of any entry's life (answers from the cluster change when pods move). */
  maxTtlMs: number;
  /** Entries kept; the oldest go first. */
  maxEntries: number;
  now?: () => number;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
}

export class TtlCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly inflight = new Map<string, Promise<{ value: V; ttlMs: number }>>();
  private readonly now: () => number;

  constructor(private readonly options: CacheOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The value and the ms it has left, or undefined when absent or expired. */
  get(key: string): { value: V; remainingMs: number } | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    const remainingMs = e.expiresAt - this.now();
    if (remainingMs <= 0) {
      this.entries.delete(key);
      return undefined;
    }
    return { value: e.value, remainingMs };
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

  /** The cached value, else the result of lookup() (shared by concurrent callers), cached for its ttl. */
  async getOrLoad(
    key: string,
    lookup: () => Promise<{ value: V; ttlMs: number }>,
  ): Promise<{ value: V; remainingMs: number }> {
    const hit = this.get(key);
    if (hit) return hit;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = lookup().finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    const loaded = await pending;
    this.set(key, loaded.value, loaded.ttlMs);
    return { value: loaded.value, remainingMs: Math.min(loaded.ttlMs, this.options.maxTtlMs) };
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
