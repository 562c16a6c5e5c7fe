// The kernel's half of the TCP system stack: bpf/tp_vif.bpf.c on the TUN's egress rewrites the packets of
// the flows the packet worker has set up, so they no longer cross the TUN and the worker twice each.
//
// Without it every packet of a kept connection leaves the stack into the TUN, wakes the packet worker,
// is rewritten in JavaScript and written back (~19 µs of the worker's CPU a packet, and a thread hand-off
// each way: daemons/root/README.md). With it the worker still handles each flow's SYN, FIN and RST and
// every packet the program does not know (tcp-nat.ts stays the one that decides), and puts a flow's two
// rewrites in the program's map once its SYN has reached the listener.
//
// It needs libbpf.so.1, CAP_BPF and CAP_NET_ADMIN (the root daemon's) and tcx (Linux 6.6); without any of
// them the worker rewrites every packet as before and the status says why (KernelNat.attach throws).
// Nothing is pinned: the program is attached by a link whose only reference is this process's fd, so it
// goes when the daemon exits, however it exits.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { BPF_ANY, BPF_TCX_EGRESS, BpfError, check, checkPointer, errnoName, libbpf } from '../bpf/libbpf.js';
import type { FlowOffload, Rewrite } from './tcp-nat.js';

/**
 * Keep in step with struct tp_vif_key and struct tp_vif_rewrite in bpf/tp_vif.bpf.c (its map holds
 * TP_VIF_MAX_ENTRIES = 16,384 entries, two per flow: past 8,192 flows at once the worker takes the rest).
 */
export const KEY_BYTES = 40;
export const VALUE_BYTES = 36;
const PROGRAM = 'tp_vif_egress';
const NAT_MAP = 'tp_vif_nat';
const STATS_MAP = 'tp_vif_stats';
const E2BIG = 7;
const ENOMEM = 12;

/** The map's key for packets from src:srcPort to dst:dstPort (4- or 16-byte addresses, ports in host order). */
export function natKey(src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number): Buffer {
  const key = Buffer.alloc(KEY_BYTES);
  key.set(src, 0);
  key.set(dst, 16);
  key.writeUInt16BE(srcPort, 32);
  key.writeUInt16BE(dstPort, 34);
  key[36] = src.length === 4 ? 4 : 6;
  return key;
}

/** The map's value: the new source and destination, addresses packed (IPv4: 4 + 4 bytes), then the ports. */
export function natValue(to: Rewrite): Buffer {
  const value = Buffer.alloc(VALUE_BYTES);
  value.set(to.src, 0);
  value.set(to.dst, to.src.length);
  value.writeUInt16BE(to.srcPort, 32);
  value.writeUInt16BE(to.dstPort, 34);
  return value;
}

export interface KernelNatStats {
  /** Packets and bytes the kernel rewrote (the worker never saw them). */
  packets: number;
  bytes: number;
  /** Flows whose rewrites are in the map now. */
  flows: number;
  /** Flows left to the worker because the map was full. */
  full: number;
  /** Flows left to the worker because the map refused them otherwise, and the last such error. */
  failed: number;
  lastError?: string;
}

let ifNameToIndex: ((name: string) => number) | undefined;

function interfaceIndex(name: string): number {
  ifNameToIndex ??= koffi.load('libc.so.6').func('unsigned int if_nametoindex(const char *name)') as (
    name: string,
  ) => number;
  const index = ifNameToIndex(name);
  if (!index) throw new BpfError(`interface ${name} not found`, koffi.errno() || 19);
  return index;
}

/** The compiled program, beside the compiled bpf/ modules (dist/bpf/tp_vif.bpf.o). */
export function defaultObjectPath(): string {
  return fileURLToPath(new URL('../bpf/tp_vif.bpf.o', import.meta.url));
}

export class KernelNat implements FlowOffload {
  readonly stats: KernelNatStats = { packets: 0, bytes: 0, flows: 0, full: 0, failed: 0 };
  private closed = false;
  private readonly cpus: number;
  private readonly statsValue: Buffer;
  private readonly statsKey = Buffer.alloc(4);

  private constructor(
    private readonly obj: unknown,
    private readonly linkFd: number,
    private readonly natFd: number,
    private readonly statsFd: number,
  ) {
    this.cpus = libbpf().numPossibleCpus();
    this.statsValue = Buffer.alloc(16 * Math.max(1, this.cpus));
  }

  /**
   * Loads the program and attaches it to the egress of the interface `ifname`. Throws BpfError with the
   * reason (and what to do) when it cannot; nothing is left attached then.
   */
  static attach(ifname: string, objectPath = defaultObjectPath()): KernelNat {
    if (!fs.existsSync(objectPath))
      throw new BpfError(
        `${objectPath} is missing: build it with \`node build.mjs\` (needs clang, libbpf-dev)`,
        2,
      );
    const bpf = libbpf();
    const obj = checkPointer(bpf.objectOpenFile(objectPath), `opening ${objectPath}`);
    let linkFd = -1;
    try {
      check(bpf.objectLoad(obj), `loading ${objectPath} into the kernel (needs CAP_BPF)`);
      const prog = checkPointer(bpf.findProgram(obj, PROGRAM), `finding program ${PROGRAM}`);
      const nat = checkPointer(bpf.findMap(obj, NAT_MAP), `finding map ${NAT_MAP}`);
      const stats = checkPointer(bpf.findMap(obj, STATS_MAP), `finding map ${STATS_MAP}`);
      const rc = bpf.linkCreate(bpf.programFd(prog), interfaceIndex(ifname), BPF_TCX_EGRESS);
      if (rc < 0) {
        const errno = -rc;
        const why =
          errno === 22
            ? ': this kernel has no tcx (Linux 6.6 or later has)'
            : ' (needs CAP_NET_ADMIN and CAP_BPF)';
        throw new BpfError(
          `attaching ${PROGRAM} to the egress of ${ifname} failed: ${errnoName(errno)}${why}`,
          errno,
        );
      }
      linkFd = rc;
      return new KernelNat(obj, linkFd, bpf.mapFd(nat), bpf.mapFd(stats));
    } catch (e) {
      if (linkFd >= 0) bpf.close(linkFd);
      bpf.objectClose(obj);
      throw e;
    }
  }

  /**
   * Puts a flow's two rewrites in the map: `forward` for the client's packets (keyed by what the client
   * sends), `reverse` for the listener's. False when the map is full or refuses: the worker keeps the flow.
   * Never throws: a flow the kernel does not take is still carried, by the worker.
   */
  add(forward: { from: Rewrite; to: Rewrite }, reverse: { from: Rewrite; to: Rewrite }): boolean {
    if (this.closed) return false;
    const bpf = libbpf();
    const fk = keyOf(forward.from);
    let rc = bpf.mapUpdate(this.natFd, fk, natValue(forward.to), BPF_ANY);
    if (rc === 0) {
      rc = bpf.mapUpdate(this.natFd, keyOf(reverse.from), natValue(reverse.to), BPF_ANY);
      if (rc !== 0) bpf.mapDelete(this.natFd, fk);
    }
    if (rc === 0) {
      this.stats.flows++;
      return true;
    }
    if (rc === -E2BIG || rc === -ENOMEM) this.stats.full++;
    else {
      this.stats.failed++;
      this.stats.lastError = `adding a flow to the kernel NAT map failed: ${errnoName(-rc)}`;
    }
    return false;
  }

  /** Takes a flow's rewrites out of the map (its packets go to the worker again). */
  remove(forward: Rewrite, reverse: Rewrite): void {
    if (this.closed) return;
    const bpf = libbpf();
    const a = bpf.mapDelete(this.natFd, keyOf(forward));
    const b = bpf.mapDelete(this.natFd, keyOf(reverse));
    if (a === 0 || b === 0) this.stats.flows--;
  }

  /** Reads the program's counters (summed over the CPUs) into `stats`. */
  refresh(): KernelNatStats {
    if (this.closed) return this.stats;
    if (libbpf().mapLookup(this.statsFd, this.statsKey, this.statsValue) === 0) {
      let packets = 0n;
      let bytes = 0n;
      for (let cpu = 0; cpu < this.cpus; cpu++) {
        packets += this.statsValue.readBigUInt64LE(cpu * 16);
        bytes += this.statsValue.readBigUInt64LE(cpu * 16 + 8);
      }
      this.stats.packets = Number(packets);
      this.stats.bytes = Number(bytes);
    }
    return this.stats;
  }

  /** Detaches the program and frees its maps. */
  close(): void {
    if (this.closed) return;
    this.refresh();
    this.closed = true;
    const bpf = libbpf();
    bpf.close(this.linkFd);
    bpf.objectClose(this.obj);
  }
}

function keyOf(r: Rewrite): Buffer {
  return natKey(r.src, r.srcPort, r.dst, r.dstPort);
}
