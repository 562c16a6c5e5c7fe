// Pod IPs from the node's podCIDR (IPv4): the first address is the bridge's, the network and
// broadcast addresses are never handed out. Allocation goes round-robin (host-local IPAM's habit) so
// a freed address is not reused at once, and is persisted so a restarted node agent keeps its pods'
// addresses.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Cidr, parseCidr } from '../../netaddr/parse.js';

function toNumber(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

function toIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export interface IpamState {
  cidr: string;
  /** ip -> owner (a pod UID) */
  allocations: Record<string, string>;
  last: string | undefined;
}

export class PodAddressPool {
  readonly cidr: Cidr;
  private readonly first: number;
  private readonly lastUsable: number;
  private allocations: Map<string, string>;
  private last: number | undefined;

  constructor(cidrText: string, state?: IpamState) {
    this.cidr = parseCidr(cidrText, 'podCIDR');
    if (this.cidr.family !== 4) throw new Error(`podCIDR ${cidrText}: the lab node agent supports IPv4 only`);
    if (this.cidr.prefix > 29)
      throw new Error(`podCIDR ${cidrText}: too small for pods (need /29 or larger)`);
    const network = toNumber(this.cidr.address);
    const size = 2 ** (32 - this.cidr.prefix);
    this.first = network + 2; // network + 1 is the bridge
    this.lastUsable = network + size - 2; // the last one is broadcast
    const reuse = state && state.cidr === this.cidr.text;
    this.allocations = new Map(reuse ? Object.entries(state.allocations) : []);
    this.last = reuse && state.last ? toNumber(state.last) : undefined;
  }

  /** The bridge's (gateway's) address: the first of the CIDR. */
  get gateway(): string {
    return toIp(toNumber(this.cidr.address) + 1);
  }

  get prefix(): number {
    return this.cidr.prefix;
  }

  addressOf(owner: string): string | undefined {
    for (const [ip, o] of this.allocations) if (o === owner) return ip;
    return undefined;
  }

  /** The owner's address, allocating one when it has none. */
  allocate(owner: string): string {
    const existing = this.addressOf(owner);
    if (existing) return existing;
    const count = this.lastUsable - this.first + 1;
    const start = this.last === undefined ? this.first : this.last + 1;
    for (let i = 0; i < count; i++) {
      const n = this.first + ((start - this.first + i) % count);
      const ip = toIp(n);
      if (!this.allocations.has(ip)) {
        this.allocations.set(ip, owner);
        this.last = n;
        return ip;
      }
    }
    throw new Error(`podCIDR ${this.cidr.text} is exhausted: ${count} pods have addresses`);
  }

  release(owner: string): void {
    for (const [ip, o] of this.allocations) if (o === owner) this.allocations.delete(ip);
  }

  owners(): string[] {
    return [...new Set(this.allocations.values())];
  }

  toState(): IpamState {
    return {
      cidr: this.cidr.text,
      allocations: Object.fromEntries(this.allocations),
      last: this.last === undefined ? undefined : toIp(this.last),
    };
  }
}

/** The pool persisted as JSON in the node agent's state directory, written atomically. */
export class PersistentAddressPool {
  private constructor(
    private readonly file: string,
    readonly pool: PodAddressPool,
  ) {}

  static open(file: string, cidr: string): PersistentAddressPool {
    let state: IpamState | undefined;
    try {
      state = JSON.parse(fs.readFileSync(file, 'utf8')) as IpamState;
    } catch {
      state = undefined; // first start, or unreadable: start empty
    }
    return new PersistentAddressPool(file, new PodAddressPool(cidr, state));
  }

  allocate(owner: string): string {
    const ip = this.pool.allocate(owner);
    this.save();
    return ip;
  }

  release(owner: string): void {
    this.pool.release(owner);
    this.save();
  }

  private save(): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify(this.pool.toState(), null, 2)}\n`, { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }
}
