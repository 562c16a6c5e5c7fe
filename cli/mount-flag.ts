// Pure: tp intercept/ingest --mount[=DIR][:ro|:rw] → what the user daemon is asked to mount.
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

export interface MountRequest {
  mount: boolean;
  /** '' : a directory the daemon makes. */
  mountPoint: string;
  /** :rw — writable where the volume allows it; read-only (:ro) by default. */
  mountReadWrite: boolean;
}

/** --mount, --mount=DIR, --mount=DIR:rw, --mount=:rw (a new directory, writable), --mount=false. */
export function parseMountFlag(flag: string | boolean | undefined, cwd = process.cwd()): MountRequest {
  const none = { mount: false, mountPoint: '', mountReadWrite: false };
  if (flag === undefined || flag === false || flag === 'false') return none;
  if (flag === true) return { mount: true, mountPoint: '', mountReadWrite: false };
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
  };
}

/** The line after an intercept or ingest: where its volumes are, and how. */
export const mountedText = (mountPoint: string, readWrite: boolean) =>
  mountPoint
    ? `Volumes mounted ${readWrite ? 'read-write (where the volume allows it)' : 'read-only'} at ${mountPoint} (TP_ROOT)\n`
    : '';
