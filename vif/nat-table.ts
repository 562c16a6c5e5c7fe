// The NAT table of the TCP "system stack": each client flow (client address:port -> cluster address:port)
// is given a fake peer (an address of the VIF's subnet that is not local, and a port); the packets are
// rewritten so the kernel delivers the flow to a local listener as a connection from that fake peer, and
// the listener finds the original destination here by the peer it sees.
//
// A closed flow stays findable for lingerMs (late FIN/ACK retransmits still get through), and its fake
// peer is not handed out again for reuseDelayMs: the listener's socket may sit in TIME_WAIT for 60 s, and
// a new SYN from the same fake peer would hit it.

export interface NatEntry<T> {
  /** The key of the client's packets (packet.ts flowKey). */
  readonly key: string;
  readonly client: Buffer;
  readonly clientPort: number;
  /** The original destination: the cluster address and port the client dialed. */
  readonly target: Buffer;
  readonly targetPort: number;
  /** The fake peer the listener sees. */
  readonly fake: Buffer;
  readonly fakePort: number;
  /** When the flow closed (ms); undefined while it is open. */
  closedAt: number | undefined;
  value: T;
}

export interface NatTableOptions<T> {
  /** Fake peer addresses (all of one family, never local addresses). */
  fakeAddresses: Buffer[];
  firstPort?: number;
  lastPort?: number;
  lingerMs?: number;
  reuseDelayMs?: number;
  now?: () => number;
  /** Called when a flow leaves the table (replaced, removed, swept). */
  onRetire?: (entry: NatEntry<T>) => void;
}

export class NatExhaustedError extends Error {
  override name = 'NatExhaustedError';
}

export const DEFAULT_LINGER_MS = 15_000;
export const DEFAULT_REUSE_DELAY_MS = 75_000;

export class NatTable<T> {
  private readonly byKey = new Map<string, NatEntry<T>>();
  private readonly byFake = new Map<string, NatEntry<T>>();
  /** Fake peers of removed flows that must not be reused yet: fake key -> reusable from (ms). */
  private readonly quarantine = new Map<string, number>();
  private readonly fakeAddresses: Buffer[];
  private readonly fakeTexts: string[];
  private readonly firstPort: number;
  private readonly portCount: number;
  private readonly lingerMs: number;
  private readonly reuseDelayMs: number;
  private readonly now: () => number;
  private readonly onRetire: ((entry: NatEntry<T>) => void) | undefined;
  private cursor = 0;

  constructor(options: NatTableOptions<T>) {
    if (options.fakeAddresses.length === 0)
      throw new RangeError('the NAT table needs at least one fake address');
    this.fakeAddresses = options.fakeAddresses.map((a) => Buffer.from(a));
    this.fakeTexts = this.fakeAddresses.map((a) => a.toString('latin1'));
    this.firstPort = options.firstPort ?? 1024;
    this.portCount = (options.lastPort ?? 65535) - this.firstPort + 1;
    this.lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
    this.reuseDelayMs = Math.max(options.reuseDelayMs ?? DEFAULT_REUSE_DELAY_MS, this.lingerMs);
    this.now = options.now ?? Date.now;
    this.onRetire = options.onRetire;
  }

  /** Flows in the table, lingering ones included. */
  get size(): number {
    return this.byKey.size;
  }

  get(key: string): NatEntry<T> | undefined {
    return this.byKey.get(key);
  }

  /** The flow whose fake peer is address:port (address: the bytes of the listener's reply destination). */
  getByFake(address: Uint8Array, port: number): NatEntry<T> | undefined {
    return this.byFake.get(fakeKey(Buffer.from(address.buffer, address.byteOffset, address.length), port));
  }

  /** Same, with the address already as latin1 text (the hot path: no Buffer per packet). */
  getByFakeText(addressText: string, port: number): NatEntry<T> | undefined {
    return this.byFake.get(addressText + String.fromCharCode(port));
  }

  /** Adds a flow and gives it a fake peer. A lingering flow with the same key is replaced. */
  add(
    key: string,
    client: Uint8Array,
    clientPort: number,
    target: Uint8Array,
    targetPort: number,
    value: T,
  ): NatEntry<T> {
    const old = this.byKey.get(key);
    if (old) this.retire(old);
    const slots = this.fakeAddresses.length * this.portCount;
    const now = this.now();
    for (let tried = 0; tried < slots; tried++) {
      const slot = this.cursor;
      this.cursor = (this.cursor + 1) % slots;
      const addressIndex = slot % this.fakeAddresses.length;
      const port = this.firstPort + Math.floor(slot / this.fakeAddresses.length);
      const fk = this.fakeTexts[addressIndex]! + String.fromCharCode(port);
      if (this.byFake.has(fk)) continue;
      const until = this.quarantine.get(fk);
      if (until !== undefined) {
        if (until > now) continue;
        this.quarantine.delete(fk);
      }
      const entry: NatEntry<T> = {
        key,
        client: Buffer.from(client),
        clientPort,
        target: Buffer.from(target),
        targetPort,
        fake: this.fakeAddresses[addressIndex]!,
        fakePort: port,
        closedAt: undefined,
        value,
      };
      this.byKey.set(key, entry);
      this.byFake.set(fk, entry);
      return entry;
    }
    throw new NatExhaustedError(
      `all ${slots} fake peers of the VIF are in use or cooling down: too many connections at once`,
    );
  }

  /** The flow closed: it lingers, then its fake peer cools down before reuse. */
  close(entry: NatEntry<T>): void {
    if (entry.closedAt === undefined) entry.closedAt = this.now();
  }

  /**
   * Removes a flow now. cooledDown: its fake peer never reached the listener (a refused dial), so it
   * may be reused at once.
   */
  remove(entry: NatEntry<T>, cooledDown = false): void {
    if (cooledDown) {
      if (this.byKey.get(entry.key) === entry) this.byKey.delete(entry.key);
      const fk = fakeKey(entry.fake, entry.fakePort);
      if (this.byFake.get(fk) === entry) this.byFake.delete(fk);
      this.onRetire?.(entry);
      return;
    }
    this.retire(entry);
  }

  /** Drops flows that have lingered long enough and expired cool-downs; returns the dropped flows. */
  sweep(): NatEntry<T>[] {
    const now = this.now();
    const dropped: NatEntry<T>[] = [];
    for (const entry of this.byKey.values()) {
      if (entry.closedAt !== undefined && now - entry.closedAt >= this.lingerMs) dropped.push(entry);
    }
    for (const entry of dropped) this.retire(entry);
    for (const [fk, until] of this.quarantine) if (until <= now) this.quarantine.delete(fk);
    return dropped;
  }

  /** Every flow (for shutdown). */
  entries(): IterableIterator<NatEntry<T>> {
    return this.byKey.values();
  }

  private retire(entry: NatEntry<T>): void {
    if (this.byKey.get(entry.key) === entry) this.byKey.delete(entry.key);
    const fk = fakeKey(entry.fake, entry.fakePort);
    if (this.byFake.get(fk) === entry) {
      this.byFake.delete(fk);
      this.quarantine.set(fk, (entry.closedAt ?? this.now()) + this.reuseDelayMs);
    }
    this.onRetire?.(entry);
  }
}

function fakeKey(address: Buffer, port: number): string {
  return address.toString('latin1') + String.fromCharCode(port);
}
