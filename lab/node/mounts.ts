// Where a container's volumes go, and the writing of volume contents into the pod's state
// directory. containerMounts is pure; writeVolume is the filesystem edge.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { BindMount } from './container-process.js';
import { ContainerConfigError } from './env.js';
import type { VolumeContent } from './volumes.js';

export interface MountSources {
  resolvConf: string;
  hosts: string;
  /** The host directory (or host path) holding a volume; undefined when the pod has no such volume. */
  volume(name: string): string | undefined;
  /** Whether a source path is a file (subPath of a file, hostPath of a file). */
  isFile(source: string): boolean;
}

function cleanRelative(p: string, what: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (p.startsWith('/') || parts.includes('..'))
    throw new ContainerConfigError(`invalid ${what} ${JSON.stringify(p)}`);
  return parts.join('/');
}

/** The bind mounts of one container, parents before children. */
export function containerMounts(container: V1Container, sources: MountSources): BindMount[] {
  const mounts: BindMount[] = [
    { source: sources.hosts, target: '/etc/hosts', readOnly: false, isFile: true },
    { source: sources.resolvConf, target: '/etc/resolv.conf', readOnly: false, isFile: true },
  ];
  for (const m of container.volumeMounts ?? []) {
    const target = path.posix.normalize(m.mountPath);
    if (!target.startsWith('/') || target === '/') {
      throw new ContainerConfigError(`volume mount ${m.name}: mountPath must be an absolute path below /`);
    }
    const base = sources.volume(m.name);
    if (base === undefined)
      throw new ContainerConfigError(`volume mount ${m.name}: the pod has no such volume`);
    const sub = m.subPath ? cleanRelative(m.subPath, 'subPath') : '';
    const source = sub ? path.join(base, sub) : base;
    mounts.push({ source, target, readOnly: m.readOnly === true, isFile: sources.isFile(source) });
  }
  const depth = (p: string) => p.split('/').length;
  return mounts
    .map((m, i) => ({ m, i }))
    .sort((a, b) => depth(a.m.target) - depth(b.m.target) || a.i - b.i)
    .map((x) => x.m);
}

/** Mounts whose target must exist on the host's filesystem: those not inside an earlier mount. */
export function hostTargets(mounts: BindMount[]): BindMount[] {
  const out: BindMount[] = [];
  const earlier: string[] = [];
  for (const m of mounts) {
    const inside = earlier.some((e) => m.target.startsWith(`${e}/`));
    if (!inside) out.push(m);
    if (!m.isFile) earlier.push(m.target);
  }
  return out;
}

export interface VolumeOwnership {
  /** pod securityContext.fsGroup: files get this group, readable by it. */
  fsGroup: number | undefined;
  /** The one non-root uid all containers run as, if any: files are given to it. */
  uid: number | undefined;
}

/** The one non-root runAsUser shared by all containers, if there is one. */
export function commonRunAsUser(pod: V1Pod): number | undefined {
  const podUid = pod.spec?.securityContext?.runAsUser;
  const uids = new Set(
    [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].map(
      (c) => c.securityContext?.runAsUser ?? podUid,
    ),
  );
  if (uids.size !== 1) return undefined;
  const [uid] = [...uids];
  return uid === undefined || uid === 0 ? undefined : uid;
}

function listFiles(dir: string, prefix = ''): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) =>
    e.isDirectory() ? listFiles(path.join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`],
  );
}

/**
 * Brings a volume's directory up to date: files are replaced by rename (a reader never sees half a
 * file) and files no longer projected are removed. Returns true when anything changed.
 */
export function writeVolume(dir: string, content: VolumeContent, owner: VolumeOwnership): boolean {
  if (content.kind === 'hostPath') {
    const type = content.type;
    if (type === 'DirectoryOrCreate') fs.mkdirSync(content.path, { recursive: true, mode: 0o755 });
    else if (type === 'FileOrCreate' && !fs.existsSync(content.path))
      fs.writeFileSync(content.path, '', { mode: 0o644 });
    else if ((type === 'Directory' || type === 'File') && !fs.existsSync(content.path)) {
      throw new Error(`hostPath ${content.path} does not exist`);
    }
    return false;
  }
  if (content.kind === 'emptyDir') {
    if (fs.existsSync(dir)) return false;
    fs.mkdirSync(dir, { recursive: true });
    fs.chmodSync(dir, 0o777); // any container user may write, as with the kubelet's emptyDir
    return true;
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  let changed = false;
  const wanted = new Set<string>();
  for (const f of content.files) {
    wanted.add(f.path);
    const file = path.join(dir, f.path);
    let mode = f.mode & 0o777;
    if (owner.fsGroup !== undefined) mode |= 0o040;
    const same = (() => {
      try {
        return fs.readFileSync(file).equals(f.data) && (fs.statSync(file).mode & 0o777) === mode;
      } catch {
        return false;
      }
    })();
    if (same) continue;
    changed = true;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    const tmp = path.join(path.dirname(file), `..${path.basename(file)}.tmp`);
    fs.writeFileSync(tmp, f.data);
    fs.chmodSync(tmp, mode);
    if (owner.fsGroup !== undefined || owner.uid !== undefined)
      fs.chownSync(tmp, owner.uid ?? 0, owner.fsGroup ?? 0);
    fs.renameSync(tmp, file);
  }
  for (const existing of listFiles(dir)) {
    if (!wanted.has(existing)) {
      fs.rmSync(path.join(dir, existing), { force: true });
      changed = true;
    }
  }
  return changed;
}
