// Pure: tp intercept/ingest --mount[=DIR][:ro|:rw] and --local-mount-port PORT[:ro|:rw] → what the user
// daemon is asked to mount or serve.
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

export interface MountRequest {
  mount: boolean;
  /** '' : a directory the daemon makes. */
  mountPoint: string;
  /** :rw — writable where the volume allows it; read-only (:ro) by default. */
  mountReadWrite: boolean;
  /** --local-mount-port: the volumes served as SFTP on 127.0.0.1:PORT instead of mounted (0: not). */
  localMountPort: number;
}

/** --mount, --mount=DIR, --mount=DIR:rw, --mount=:rw (a new directory, writable), --mount=false. */
export function parseMountFlag(flag: string | boolean | undefined, cwd = process.cwd()): MountRequest {
  const none = { mount: false, mountPoint: '', mountReadWrite: false, localMountPort: 0 };
  if (flag === undefined || flag === false || flag === 'false') return none;
  if (flag === true) return { ...none, mount: true };
  const m = /^(.*?)(?::(ro|rw))?$/.exec(flag)!;
  const dir = m[1]!;
  const mountReadWrite = m[2] === 'rw';
  if (dir === 'false') {
    if (m[2]) throw new UsageError(`--mount=${flag}: false mounts nothing, so it takes no :${m[2]}`);
    return none;
  }
  return {
    mount: true,
    mountPoint: dir === '' || dir === 'true' ? '' : path.resolve(cwd, dir),
    mountReadWrite,
    localMountPort: 0,
  };
}

/** --local-mount-port PORT[:ro|:rw] on top of what --mount asked; the two exclude each other. */
export function withLocalMountPort(mount: MountRequest, flag: string | undefined): MountRequest {
  if (flag === undefined) return mount;
  const m = /^(\d{1,5})(?::(ro|rw))?$/.exec(flag);
  const port = m ? Number(m[1]) : 0;
  if (!m || port < 1 || port > 65535)
    throw new UsageError(
      `--local-mount-port ${flag}: expected a port number 1-65535, optionally with :ro or :rw (e.g. 2222 or 2222:rw)`,
    );
  if (mount.mount)
    throw new UsageError(
      '--mount and --local-mount-port both ask for the volumes: --mount mounts them with sshfs, --local-mount-port serves them to a mounter of your own; pass one',
    );
  return { mount: false, mountPoint: '', mountReadWrite: m[2] === 'rw', localMountPort: port };
}

/** The line after an intercept or ingest: where its volumes are, and how. */
export function mountedText(mountPoint: string, readWrite: boolean, localMountPort = 0): string {
  const access = readWrite ? 'read-write (where the volume allows it)' : 'read-only';
  if (localMountPort)
    return `Volumes served ${access} over SFTP on 127.0.0.1:${localMountPort}: mount them with e.g. sshfs -o directport=${localMountPort} localhost: DIR\n`;
  return mountPoint ? `Volumes mounted ${access} at ${mountPoint} (TP_ROOT)\n` : '';
}
