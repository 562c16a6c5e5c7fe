// The binary layout shared by tp_steer.bpf.c and its TypeScript users: map and pin names, key encoding,
// and the per-port statistics record. Pure code: no koffi, no kernel, safe to bundle into the agent.
import * as os from 'node:os';
import * as path from 'node:path';

/** Where tp pins its eBPF objects: one directory per pod network namespace below it. */
export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/tp';

/** Names of the program and its maps in tp_steer.bpf.c; the maps are pinned under these names. */
export const PROGRAM_NAME = 'tp_steer';
export const PORTS_MAP = 'tp_ports';
export const LISTENERS_MAP = 'tp_listeners';
export const STATS_MAP = 'tp_stats';
/** The pinned names of the program and of the link that attaches it to the network namespace. */
export const PROGRAM_PIN = 'prog';
export const LINK_PIN = 'link';
/** Every name the loader pins in a pod's directory. */
export const ALL_PINS = [LINK_PIN, PROGRAM_PIN, PORTS_MAP, LISTENERS_MAP, STATS_MAP] as const;

/** TP_MAX_PORTS in tp_steer.bpf.c: the size of every map. */
export const MAX_CAPTURED_PORTS = 64;

/** The pin directory of the network namespace with this inode. */
export function pinDirFor(netnsInode: number | bigint, pinRoot = DEFAULT_PIN_ROOT): string {
  return path.join(pinRoot, String(netnsInode));
}

/** Every map is keyed by the port as a __u16 in host byte order (sk_lookup's local_port is host order). */
export function encodePortKey(port: number): Buffer {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`port ${port} is out of range 1-65535`);
  }
  const key = Buffer.alloc(2);
  if (os.endianness() === 'LE') key.writeUInt16LE(port);
  else key.writeUInt16BE(port);
  return key;
}

export function decodePortKey(key: Uint8Array): number {
  if (key.length !== 2) throw new RangeError(`a port key has 2 bytes, got ${key.length}`);
  const b = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  return os.endianness() === 'LE' ? b.readUInt16LE(0) : b.readUInt16BE(0);
}

/** The value of tp_ports: a captured port maps to 1. */
export const CAPTURED_VALUE = Buffer.from([1]);

/** struct tp_port_stats, in field order. */
export const STATS_FIELDS = ['steered', 'noListener', 'local', 'assignFailed'] as const;
export type PortStats = Record<(typeof STATS_FIELDS)[number], bigint>;
export const STATS_SIZE = STATS_FIELDS.length * 8;

/** The sizes of each map's key and value, as tp_steer.bpf.c declares them. */
export const MAP_LAYOUT = {
  [PORTS_MAP]: { keySize: 2, valueSize: 1 },
  [LISTENERS_MAP]: { keySize: 2, valueSize: 8 },
  [STATS_MAP]: { keySize: 2, valueSize: STATS_SIZE },
} as const;

export function zeroStats(): PortStats {
  return { steered: 0n, noListener: 0n, local: 0n, assignFailed: 0n };
}

export function decodeStats(value: Uint8Array): PortStats {
  if (value.length !== STATS_SIZE) {
    throw new RangeError(`struct tp_port_stats has ${STATS_SIZE} bytes, got ${value.length}`);
  }
  const b = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const read = (i: number) =>
    os.endianness() === 'LE' ? b.readBigUInt64LE(i * 8) : b.readBigUInt64BE(i * 8);
  const stats = zeroStats();
  STATS_FIELDS.forEach((field, i) => {
    stats[field] = read(i);
  });
  return stats;
}

/** The SOCKHASH value written from userspace: the listening socket's file descriptor as a __u64. */
export function encodeSocketFd(fd: number): Buffer {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`invalid socket file descriptor ${fd}`);
  const value = Buffer.alloc(8);
  if (os.endianness() === 'LE') value.writeBigUInt64LE(BigInt(fd));
  else value.writeBigUInt64BE(BigInt(fd));
  return value;
}
