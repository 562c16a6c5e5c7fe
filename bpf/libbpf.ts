// libbpf.so.1 (Debian package libbpf1) through koffi: the thin edge between tp and the kernel's BPF API.
// Loaded on first use, so importing this module costs nothing on a machine without libbpf.
import koffi, { type LibraryHandle } from 'koffi';

/** An error from the BPF API: what failed, the errno name and, for loads, libbpf's own explanation. */
export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

type Pointer = unknown;

export interface LibBpf {
  objectOpenFile(path: string): Pointer;
  objectLoad(obj: Pointer): number;
  objectClose(obj: Pointer): void;
  findProgram(obj: Pointer, name: string): Pointer;
  findMap(obj: Pointer, name: string): Pointer;
  mapFd(map: Pointer): number;
  programFd(prog: Pointer): number;
  mapPin(map: Pointer, path: string): number;
  programPin(prog: Pointer, path: string): number;
  attachNetns(prog: Pointer, netnsFd: number): Pointer;
  linkPin(link: Pointer, path: string): number;
  linkDestroy(link: Pointer): number;
  /** bpf_link_create: attaches a loaded program by fd (tcx and other fd-based links); returns the link's fd. */
  linkCreate(progFd: number, targetFd: number, attachType: number): number;
  numPossibleCpus(): number;
  objGet(path: string): number;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: bigint): number;
  mapLookup(fd: number, key: Buffer, value: Buffer): number;
  mapDelete(fd: number, key: Buffer): number;
  mapNextKey(fd: number, key: Buffer | null, next: Buffer): number;
  objInfo(fd: number, info: Buffer, len: Buffer): number;
  probeProgType(type: number): number;
  /** BPF_ENABLE_STATS: the kernel times every program run while the returned fd is open. */
  enableStats(type: number): number;
  close(fd: number): number;
}

// bpf_map_update_elem flags (linux/bpf.h).
export const BPF_ANY = 0n;
export const BPF_NOEXIST = 1n;
// enum bpf_prog_type (linux/bpf.h).
export const BPF_PROG_TYPE_SK_LOOKUP = 30;
// enum bpf_stats_type (linux/bpf.h).
export const BPF_STATS_RUN_TIME = 0;
// enum bpf_link_type / bpf_attach_type (linux/bpf.h).
export const BPF_LINK_TYPE_NETNS = 5;
export const BPF_SK_LOOKUP = 36;
/** tcx, the fd-based tc hook (Linux 6.6); Debian 12's headers predate it. */
export const BPF_TCX_EGRESS = 47;

// enum libbpf_print_level: LIBBPF_WARN = 0, LIBBPF_INFO = 1, LIBBPF_DEBUG = 2.
const LIBBPF_INFO = 1;

let lib: LibBpf | undefined;
/** The last lines libbpf printed (verifier log, pin errors): attached to load errors. */
const libbpfMessages: string[] = [];

export function libbpf(): LibBpf {
  if (lib) return lib;
  let bpf: LibraryHandle;
  let c: LibraryHandle;
  try {
    bpf = koffi.load('libbpf.so.1');
    c = koffi.load('libc.so.6');
  } catch (err) {
    throw new BpfError(
      `cannot load libbpf.so.1 (${(err as Error).message}): install the Debian package libbpf1`,
      0,
    );
  }
  // libbpf's handles are opaque: declared as void * so no koffi type name can clash with another module.
  const f = (proto: string) => bpf.func(proto);

  // libbpf prints warnings and the verifier log through a callback: collect them instead of writing to
  // stderr, so errors carry them and a successful run stays quiet.
  const vsnprintf = c.func('int vsnprintf(void *buf, size_t size, const char *fmt, void *ap)');
  const printFn = koffi.proto('int tp_libbpf_print(int level, const char *fmt, void *ap)');
  const setPrint = f('void *libbpf_set_print(tp_libbpf_print *fn)');
  const buf = Buffer.alloc(4096);
  const print = koffi.register((level: number, fmt: string, ap: unknown) => {
    if (level > LIBBPF_INFO) return 0; // the debug level narrates every ELF section
    const n = vsnprintf(buf, buf.length, fmt, ap) as number;
    const text = buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))).toString('utf8');
    for (const line of text.split('\n')) if (line.trim()) libbpfMessages.push(line);
    if (libbpfMessages.length > 40) libbpfMessages.splice(0, libbpfMessages.length - 40);
    return 0;
  }, koffi.pointer(printFn));
  setPrint(print);

  const openFile = f('void *bpf_object__open_file(const char *path, void *opts)');
  const probe = f('int libbpf_probe_bpf_prog_type(int prog_type, void *opts)');
  const linkCreate = f('int bpf_link_create(int prog_fd, int target_fd, int attach_type, void *opts)');
  lib = {
    objectOpenFile: (path) => openFile(path, null),
    objectLoad: f('int bpf_object__load(void *obj)'),
    objectClose: f('void bpf_object__close(void *obj)'),
    findProgram: f('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
    findMap: f('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
    mapFd: f('int bpf_map__fd(void *map)'),
    programFd: f('int bpf_program__fd(void *prog)'),
    mapPin: f('int bpf_map__pin(void *map, const char *path)'),
    programPin: f('int bpf_program__pin(void *prog, const char *path)'),
    attachNetns: f('void *bpf_program__attach_netns(void *prog, int netns_fd)'),
    linkPin: f('int bpf_link__pin(void *link, const char *path)'),
    linkDestroy: f('int bpf_link__destroy(void *link)'),
    linkCreate: (progFd, targetFd, attachType) => linkCreate(progFd, targetFd, attachType, null),
    numPossibleCpus: f('int libbpf_num_possible_cpus(void)'),
    objGet: f('int bpf_obj_get(const char *pathname)'),
    mapUpdate: f('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    mapLookup: f('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    mapDelete: f('int bpf_map_delete_elem(int fd, const void *key)'),
    mapNextKey: f('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    objInfo: f('int bpf_obj_get_info_by_fd(int fd, void *info, void *info_len)'),
    probeProgType: (type) => probe(type, null),
    enableStats: f('int bpf_enable_stats(int type)'),
    close: c.func('int close(int fd)'),
  } as LibBpf;
  return lib;
}

let errnoNames: Record<number, string> | undefined;

/** "EPERM (1)": the errno's name, for messages a user can search for. */
export function errnoName(errno: number): string {
  // libbpf's own codes (LIBBPF_ERRNO__*) start at 4000: a malformed or incompatible object file.
  if (errno >= 4000 && errno < 4100) return `libbpf error ${errno}`;
  errnoNames ??= Object.fromEntries(Object.entries(koffi.os.errno).map(([name, value]) => [value, name]));
  return `${errnoNames[errno] ?? 'errno'} (${errno})`;
}

/** Takes libbpf's messages printed since the last call (they explain a failed load). */
export function takeLibbpfMessages(): string[] {
  return libbpfMessages.splice(0, libbpfMessages.length);
}

/** Throws BpfError when a libbpf call failed (libbpf 1.x returns -errno); returns rc otherwise. */
export function check(rc: number, what: string): number {
  if (rc >= 0) return rc;
  const errno = -rc;
  throw new BpfError(`${what} failed: ${errnoName(errno)}${libbpfExplanation()}`, errno);
}

/** Throws BpfError when a libbpf call returning a pointer failed (NULL, errno set). */
export function checkPointer<T>(p: T | null, what: string): T {
  if (p) return p;
  const errno = koffi.errno() || 1;
  throw new BpfError(`${what} failed: ${errnoName(errno)}${libbpfExplanation()}`, errno);
}

function libbpfExplanation(): string {
  const log = takeLibbpfMessages();
  return log.length ? `\n  ${log.join('\n  ')}` : '';
}
