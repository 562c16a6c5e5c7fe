// Pinned BPF objects reached by path: their kernel info (ids, names, tags, attachment) and map access.
// Free of anything but libbpf, so the agent can bundle it (bpf/steering-map.ts). The kernel's info structs
// are read little-endian: tp runs on x86-64 and arm64.
import { BPF_ANY, BPF_STATS_RUN_TIME, BpfError, check, libbpf } from './libbpf.js';

export interface ProgramInfo {
  id: number;
  name: string;
  /** The kernel's hash of the program's instructions: equal tags mean the same program. */
  tag: string;
}

export interface LinkInfo {
  id: number;
  progId: number;
  /** The inode of the network namespace the link is attached to; 0 once that namespace is gone. */
  netnsInode: number;
}

export interface MapInfo {
  id: number;
  name: string;
  keySize: number;
  valueSize: number;
}

function objectInfo(fd: number, size: number, what: string): Buffer {
  const info = Buffer.alloc(size);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(size);
  check(libbpf().objInfo(fd, info, len), `reading the ${what} info`);
  return info;
}

const cString = (b: Buffer) => b.toString('utf8').replace(/\0.*$/s, '');

export function programInfo(fd: number): ProgramInfo {
  // struct bpf_prog_info: id at 4, tag[8] at 8, name[16] at 64.
  const info = objectInfo(fd, 80, 'program');
  return {
    id: info.readUInt32LE(4),
    tag: info.subarray(8, 16).toString('hex'),
    name: cString(info.subarray(64, 80)),
  };
}

export interface ProgramRunStats {
  /** Total time spent in the program, while run-time statistics were enabled. */
  runTimeNs: bigint;
  runCount: bigint;
}

/** The run-time counters of a program (they only move while statistics are enabled). */
export function programRunStats(fd: number): ProgramRunStats {
  // struct bpf_prog_info: run_time_ns at 192, run_cnt at 200.
  const info = objectInfo(fd, 208, 'program');
  return { runTimeNs: info.readBigUInt64LE(192), runCount: info.readBigUInt64LE(200) };
}

/**
 * Turns on the kernel's timing of every BPF program run (BPF_ENABLE_STATS) until close() is called; a
 * measurement tool, it costs two clock reads per run.
 */
export function enableRunTimeStats(): { close(): void } {
  const fd = check(libbpf().enableStats(BPF_STATS_RUN_TIME), 'enabling BPF run-time statistics');
  return { close: () => closeFd(fd) };
}

export function linkInfo(fd: number): LinkInfo {
  // struct bpf_link_info: id at 4, prog_id at 8; the netns member of the union: netns_ino at 16.
  const info = objectInfo(fd, 24, 'link');
  return { id: info.readUInt32LE(4), progId: info.readUInt32LE(8), netnsInode: info.readUInt32LE(16) };
}

export function mapInfo(fd: number): MapInfo {
  // struct bpf_map_info: id at 4, key_size at 8, value_size at 12, name[16] at 24.
  const info = objectInfo(fd, 40, 'map');
  return {
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    name: cString(info.subarray(24, 40)),
  };
}

/** Opens a pinned object; returns undefined when nothing is pinned at that path. */
export function openPinned(path: string): number | undefined {
  const fd = libbpf().objGet(path);
  if (fd === -2 /* ENOENT */) return undefined;
  return check(fd, `opening the pinned object ${path}`);
}

export function closeFd(fd: number): void {
  libbpf().close(fd);
}

/** A BPF map reached through a file descriptor this object owns. */
export class BpfMap {
  constructor(
    readonly fd: number,
    readonly name: string,
    readonly keySize: number,
    readonly valueSize: number,
  ) {}

  /** Opens a pinned map and checks its layout, so a stale pin from another version is not misread. */
  static openPinned(path: string, name: string, keySize: number, valueSize: number): BpfMap | undefined {
    const fd = openPinned(path);
    if (fd === undefined) return undefined;
    const info = mapInfo(fd);
    if (info.keySize !== keySize || info.valueSize !== valueSize) {
      closeFd(fd);
      throw new BpfError(
        `the map pinned at ${path} has ${info.keySize}-byte keys and ${info.valueSize}-byte values, expected ${keySize} and ${valueSize}: it was pinned by another version of tp; remove it with \`tp-init cleanup --mechanism ebpf\``,
        22,
      );
    }
    return new BpfMap(fd, name, keySize, valueSize);
  }

  keys(): Buffer[] {
    const keys: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const rc = libbpf().mapNextKey(this.fd, prev, next);
      if (rc === -2 /* ENOENT: no more keys */) return keys;
      check(rc, `listing the keys of ${this.name}`);
      keys.push(next);
      prev = next;
    }
  }

  lookup(key: Buffer): Buffer | undefined {
    const value = Buffer.alloc(this.valueSize);
    const rc = libbpf().mapLookup(this.fd, key, value);
    if (rc === -2 /* ENOENT */) return undefined;
    check(rc, `reading ${this.name}`);
    return value;
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    check(libbpf().mapUpdate(this.fd, key, value, flags), `updating ${this.name}`);
  }

  /** Returns false when the key was not there. */
  delete(key: Buffer): boolean {
    const rc = libbpf().mapDelete(this.fd, key);
    if (rc === -2 /* ENOENT */) return false;
    check(rc, `deleting from ${this.name}`);
    return true;
  }

  close(): void {
    closeFd(this.fd);
  }
}
