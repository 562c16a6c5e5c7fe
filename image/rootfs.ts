// An image's root filesystem, declared per layer and resolved against the host: host files (with the
// symlink chain that leads to them, so /lib/x86_64-linux-gnu/libc.so.6 arrives as the symlink /lib ->
// usr/lib plus the file under /usr/lib), the shared-library closure of ELF files (ldd), directories,
// symlinks and generated files. The result is the exact entry list of each layer: paths canonical
// (never under a symlinked directory), parents present, sorted, an entry equal to one in a lower layer
// left out, two different entries for one path refused. The host is reached only through HostView.
import * as posix from 'node:path/posix';
import { UsageError } from '../netaddr/parse.js';
import { closureFiles, type LddResult } from './ldd.js';

export type RootfsItem =
  /** A host file at the same path (with its symlink chain), or at `to`; `libraries`: with its ldd closure. */
  | {
      copy: string;
      to?: string;
      mode?: number;
      uid?: number;
      gid?: number;
      /** strip --strip-unneeded (debug info and local symbols; the dynamic symbols stay). */
      strip?: boolean;
      libraries?: boolean;
      /** The Debian package that provides it, named when it is missing. */
      package?: string;
    }
  /** Every file of a host directory whose name ends with `suffix` (e.g. iptables' extensions). */
  | { copyDir: string; suffix: string; libraries?: boolean; package?: string }
  | { dir: string; mode?: number; uid?: number; gid?: number }
  | { symlink: string; target: string }
  | { file: string; data: string | Buffer; mode?: number; uid?: number; gid?: number }
  /** A static busybox (copied like `copy`) and a symlink to it for each of its applets. */
  | { busybox: string; package?: string };

export interface LayerSpec {
  /** What the layer holds: its history comment and the name in progress lines. */
  comment: string;
  items: RootfsItem[];
}

export type FileSource = { host: string; size: number } | { data: Buffer };

export type RootfsEntry =
  | { type: 'dir'; path: string; mode: number; uid: number; gid: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'file'; path: string; mode: number; uid: number; gid: number; source: FileSource };

export interface HostStat {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  size: number;
}

/** What resolution reads from the host. host.ts has the real one; tests pass a fake. */
export interface HostView {
  lstat(path: string): Promise<HostStat | undefined>;
  readlink(path: string): Promise<string>;
  readdir(path: string): Promise<string[]>;
  ldd(path: string): Promise<LddResult>;
  /** The applets of a busybox binary, as `busybox --list-full` prints them (usr/bin/env, bin/sh, …). */
  busyboxApplets(path: string): Promise<string[]>;
  /** A stripped copy of an ELF file (a scratch file the build removes). */
  strip(path: string): Promise<{ path: string; size: number }>;
}

const MAX_LINKS = 40;

function missing(path: string, pkg: string | undefined): UsageError {
  return new UsageError(
    `${path} is missing on this host${pkg ? `: install the Debian package ${pkg} (apt-get install ${pkg})` : ''}`,
  );
}

/**
 * Follows `path` component by component as the kernel would, recording every symlink met on the way
 * (at the path where it was met) in `links`; returns the regular file it ends at.
 */
async function walk(
  host: HostView,
  path: string,
  links: RootfsEntry[],
  pkg: string | undefined,
  depth = 0,
): Promise<{ path: string; stat: HostStat }> {
  if (depth > MAX_LINKS) throw new UsageError(`${path}: too many levels of symbolic links on this host`);
  const parts = path.split('/').filter((p) => p !== '');
  let current = '/';
  for (let i = 0; i < parts.length; i++) {
    const next = posix.join(current, parts[i]!);
    const stat = await host.lstat(next);
    if (stat === undefined) throw missing(path, pkg);
    if (stat.type === 'symlink') {
      const target = await host.readlink(next);
      links.push({ type: 'symlink', path: next, target });
      const resolved = posix.resolve(current, target, ...parts.slice(i + 1));
      return walk(host, resolved, links, pkg, depth + 1);
    }
    if (i === parts.length - 1) {
      if (stat.type !== 'file') throw new UsageError(`${path} on this host is not a regular file`);
      return { path: next, stat };
    }
    if (stat.type !== 'dir') throw new UsageError(`${path} on this host: ${next} is not a directory`);
    current = next;
  }
  throw new UsageError(`${path} is not a file path`);
}

interface Owner {
  mode?: number;
  uid?: number;
  gid?: number;
}

/** Mode, owner and group as declared, else `mode` and root's. */
function ownership(o: Owner, mode: number): { mode: number; uid: number; gid: number } {
  return { mode: o.mode ?? mode, uid: o.uid ?? 0, gid: o.gid ?? 0 };
}

function hostFile(path: string, file: { path: string; stat: HostStat }, owner: Owner): RootfsEntry {
  return {
    type: 'file',
    path,
    ...ownership(owner, file.stat.mode & 0o7777),
    source: { host: file.path, size: file.stat.size },
  };
}

/** A host file at its own path (symlinks included), plus its shared libraries when asked. */
async function copyHostPath(
  host: HostView,
  path: string,
  libraries: boolean,
  pkg: string | undefined,
  out: RootfsEntry[],
): Promise<{ path: string; stat: HostStat }> {
  const file = await walk(host, path, out, pkg);
  out.push(hostFile(file.path, file, {}));
  if (libraries) {
    for (const lib of closureFiles(await host.ldd(file.path), path))
      await copyHostPath(host, lib, false, pkg, out);
  }
  return file;
}

async function expandItem(host: HostView, item: RootfsItem, out: RootfsEntry[]): Promise<void> {
  if ('copy' in item) {
    const scratch: RootfsEntry[] = [];
    const file = await walk(host, item.copy, item.to === undefined ? out : scratch, item.package);
    const entry = hostFile(item.to ?? file.path, file, item);
    if (item.strip && entry.type === 'file') {
      const stripped = await host.strip(file.path);
      entry.source = { host: stripped.path, size: stripped.size };
    }
    out.push(entry);
    if (item.libraries) {
      for (const lib of closureFiles(await host.ldd(file.path), item.copy))
        await copyHostPath(host, lib, false, item.package, out);
    }
  } else if ('copyDir' in item) {
    const stat = await host.lstat(item.copyDir);
    if (stat === undefined) throw missing(item.copyDir, item.package);
    const names = (await host.readdir(item.copyDir)).filter((n) => n.endsWith(item.suffix)).sort();
    if (names.length === 0) throw new UsageError(`${item.copyDir} on this host has no *${item.suffix} file`);
    for (const name of names)
      await copyHostPath(host, posix.join(item.copyDir, name), item.libraries ?? false, item.package, out);
  } else if ('dir' in item) {
    out.push({ type: 'dir', path: item.dir, ...ownership(item, 0o755) });
  } else if ('symlink' in item) {
    out.push({ type: 'symlink', path: item.symlink, target: item.target });
  } else if ('file' in item) {
    out.push({
      type: 'file',
      path: item.file,
      ...ownership(item, 0o644),
      source: { data: Buffer.from(item.data) },
    });
  } else {
    const file = await copyHostPath(host, item.busybox, true, item.package, out);
    for (const applet of await host.busyboxApplets(file.path)) {
      const path = posix.join('/', applet);
      // Its list names busybox itself too (bin/busybox), and /linuxrc, which only an initramfs wants.
      if (posix.basename(path) !== 'busybox' && posix.dirname(path) !== '/')
        out.push({ type: 'symlink', path, target: file.path });
    }
  }
}

/** The path with every symlinked parent directory replaced by where it points, inside the image. */
export function canonicalPath(path: string, links: ReadonlyMap<string, string>): string {
  const parts = posix
    .normalize(path)
    .split('/')
    .filter((p) => p !== '');
  let current = '/';
  for (let i = 0; i < parts.length - 1; i++) {
    let next = posix.join(current, parts[i]!);
    for (let hops = 0; links.has(next); hops++) {
      if (hops > MAX_LINKS) throw new UsageError(`${path}: symbolic link loop in the image at ${next}`);
      next = canonicalPath(posix.resolve(posix.dirname(next), links.get(next)!), links);
    }
    current = next;
  }
  return parts.length === 0 ? '/' : posix.join(current, parts[parts.length - 1]!);
}

function sameEntry(a: RootfsEntry, b: RootfsEntry): boolean {
  if (a.type !== b.type || a.path !== b.path) return false;
  if (a.type === 'symlink' && b.type === 'symlink') return a.target === b.target;
  if (a.type === 'dir' && b.type === 'dir') return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid;
  if (a.type === 'file' && b.type === 'file') {
    if (a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid) return false;
    if ('host' in a.source && 'host' in b.source)
      return a.source.host === b.source.host && a.source.size === b.source.size;
    if ('data' in a.source && 'data' in b.source) return a.source.data.equals(b.source.data);
  }
  return false;
}

function describe(e: RootfsEntry): string {
  if (e.type === 'symlink') return `a symlink to ${e.target}`;
  if (e.type === 'dir') return `a directory (mode ${e.mode.toString(8)}, ${e.uid}:${e.gid})`;
  const from = 'host' in e.source ? `from ${e.source.host}` : `generated (${e.source.data.length} bytes)`;
  return `a file ${from} (mode ${e.mode.toString(8)}, ${e.uid}:${e.gid})`;
}

/** Component-wise order: a directory right before its contents, siblings by name. */
export function comparePaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return pa.length - pb.length;
}

/**
 * Resolves every layer of an image. Layers are resolved together: a path is canonical with respect
 * to the symlinks of the whole image, and a directory declared in one layer (/tmp 1777) keeps its
 * mode where another layer needs it as a parent.
 */
export async function resolveLayers(layers: LayerSpec[], host: HostView): Promise<RootfsEntry[][]> {
  const raw: RootfsEntry[][] = [];
  for (const layer of layers) {
    const out: RootfsEntry[] = [];
    for (const item of layer.items) await expandItem(host, item, out);
    raw.push(out);
  }
  const links = new Map<string, string>();
  for (const entry of raw.flat()) if (entry.type === 'symlink') links.set(entry.path, entry.target);
  const declaredDirs = new Map<string, RootfsEntry>();
  const canonical = raw.map((entries) =>
    entries.map((entry) => {
      const path = canonicalPath(entry.path, links);
      const e = { ...entry, path };
      if (e.type === 'dir') declaredDirs.set(path, e);
      return e;
    }),
  );

  const below = new Map<string, { entry: RootfsEntry; layer: string }>();
  return canonical.map((entries, index) => {
    const comment = layers[index]!.comment;
    const own = new Map<string, RootfsEntry>();
    const add = (entry: RootfsEntry) => {
      const lower = below.get(entry.path);
      if (lower !== undefined) {
        if (sameEntry(lower.entry, entry)) return;
        throw new UsageError(
          `${entry.path} is ${describe(lower.entry)} in layer "${lower.layer}" but ${describe(entry)} in layer "${comment}": declare it once`,
        );
      }
      const mine = own.get(entry.path);
      if (mine !== undefined) {
        if (sameEntry(mine, entry)) return;
        throw new UsageError(
          `${entry.path} is declared twice in layer "${comment}": ${describe(mine)} and ${describe(entry)}`,
        );
      }
      own.set(entry.path, entry);
    };
    for (const entry of entries) add(entry);
    for (const entry of [...own.values()]) {
      for (let dir = posix.dirname(entry.path); dir !== '/'; dir = posix.dirname(dir)) {
        const parent = own.get(dir) ?? below.get(dir)?.entry;
        if (parent === undefined)
          add(declaredDirs.get(dir) ?? { type: 'dir', path: dir, mode: 0o755, uid: 0, gid: 0 });
        else if (parent.type !== 'dir')
          throw new UsageError(
            `${entry.path} in layer "${comment}": its parent ${dir} is ${describe(parent)}`,
          );
      }
    }
    const sorted = [...own.values()].sort((a, b) => comparePaths(a.path, b.path));
    for (const entry of sorted) below.set(entry.path, { entry, layer: comment });
    return sorted;
  });
}
