// Pure: the SFTP (version 3, draft-ietf-secsh-filexfer-02, plus OpenSSH's extensions) requests a mount
// client may make, decided before sftp-server sees them. OpenSSH's sftp-server has no chroot without
// root, and `-d` is only a start directory: this filter is what confines a client to the container's
// volumes. Every request that names a path is checked (no `..` component, the path and its symlinks
// resolved inside the served root); writes need a read-write session and a volume mounted read-write;
// symlink and hardlink creation and every other extension are refused. Requests on handles pass: a
// handle exists only for a path that was checked when it was opened.

/** SSH_FXP_* packet types. */
export const FXP = {
  INIT: 1,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  EXTENDED: 200,
} as const;

/** SSH_FX_* status codes. */
export const FX = {
  OK: 0,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  OP_UNSUPPORTED: 8,
};

/** SSH_FXF_* open flags that write. */
const FXF_WRITING = 0x02 | 0x04 | 0x08 | 0x10; // WRITE, APPEND, CREAT, TRUNC

/** The largest packet either side may send (sftp-server's own limit is 256 KiB). */
export const MAX_PACKET = 256 * 1024 + 1024;

/** One path a request names: `follow` when the server follows a symlink in its last component. */
export interface PathArg {
  path: string;
  follow: boolean;
}

export type Request =
  | { kind: 'pass' }
  | { kind: 'check'; id: number; paths: PathArg[]; write: boolean; what: string }
  | { kind: 'refuse'; id: number; code: number; message: string };

/** Handle-only requests (and INIT): nothing to check. */
const HANDLE_ONLY = new Set<number>([
  FXP.INIT,
  FXP.CLOSE,
  FXP.READ,
  FXP.WRITE,
  FXP.FSTAT,
  FXP.FSETSTAT,
  FXP.READDIR,
]);
// copy-data: from one handle to another, both opened through checked paths (the target one for writing).
const EXT_HANDLE_ONLY = new Set([
  'fstatvfs@openssh.com',
  'fsync@openssh.com',
  'limits@openssh.com',
  'copy-data',
]);

class Reader {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  u32(): number {
    if (this.at + 4 > this.b.length) throw new Error('short packet');
    const v = this.b.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  bytes(): Buffer {
    const n = this.u32();
    if (this.at + n > this.b.length) throw new Error('short packet');
    const v = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  /** A path: UTF-8 without NUL, or undefined (refused: what is checked must be what the server uses). */
  path(): string | undefined {
    const raw = this.bytes();
    const s = raw.toString('utf8');
    if (s.includes('\0') || !Buffer.from(s, 'utf8').equals(raw)) return undefined;
    return s;
  }
}

/** What a request is: a packet's body (type byte onwards, without the length). */
export function classify(body: Buffer): Request {
  const type = body[0]!;
  if (HANDLE_ONLY.has(type)) return { kind: 'pass' };
  const r = new Reader(body.subarray(1));
  let id = 0;
  try {
    id = r.u32();
    const paths: PathArg[] = [];
    const one = (follow: boolean): boolean => {
      const p = r.path();
      if (p === undefined) return false;
      paths.push({ path: p, follow });
      return true;
    };
    const check = (write: boolean, what: string, ...follow: boolean[]): Request => {
      for (const f of follow)
        if (!one(f))
          return { kind: 'refuse', id, code: FX.PERMISSION_DENIED, message: 'a path that is not UTF-8' };
      return { kind: 'check', id, paths, write, what };
    };
    switch (type) {
      case FXP.OPEN: {
        if (!one(true))
          return { kind: 'refuse', id, code: FX.PERMISSION_DENIED, message: 'a path that is not UTF-8' };
        const pflags = r.u32();
        return { kind: 'check', id, paths, write: (pflags & FXF_WRITING) !== 0, what: 'open' };
      }
      case FXP.STAT:
      case FXP.OPENDIR:
      case FXP.REALPATH:
        return check(false, 'read', true);
      case FXP.LSTAT:
      case FXP.READLINK:
        return check(false, 'read', false);
      case FXP.SETSTAT:
        return check(true, 'setstat', true);
      case FXP.REMOVE:
      case FXP.MKDIR:
      case FXP.RMDIR:
        return check(true, 'write', false);
      case FXP.RENAME:
        return check(true, 'rename', false, false);
      case FXP.SYMLINK:
        return { kind: 'refuse', id, code: FX.PERMISSION_DENIED, message: 'tp mounts make no symlinks' };
      case FXP.EXTENDED: {
        const name = r.bytes().toString('latin1');
        if (EXT_HANDLE_ONLY.has(name)) return { kind: 'pass' };
        if (name === 'statvfs@openssh.com') return check(false, 'read', true);
        if (name === 'posix-rename@openssh.com') return check(true, 'rename', false, false);
        if (name === 'lsetstat@openssh.com') return check(true, 'setstat', false);
        return { kind: 'refuse', id, code: FX.OP_UNSUPPORTED, message: `${name} is not served by tp mounts` };
      }
      default:
        return { kind: 'refuse', id, code: FX.OP_UNSUPPORTED, message: `request type ${type} is not served` };
    }
  } catch {
    return { kind: 'refuse', id, code: FX.BAD_MESSAGE, message: 'malformed request' };
  }
}

/** The context a checked request is decided in (the filesystem side: agent/file-server.ts). */
export interface Confinement {
  /** The session asked for writes. */
  readWrite: boolean;
  /**
   * The real path (symlinks resolved; the last component only when `follow`) if it lies inside the
   * served root, else undefined. `path` is relative to the root or absolute.
   */
  resolve(path: string, follow: boolean): string | undefined;
  /** Whether a real path inside the root lies on a volume mounted read-write. */
  writable(realPath: string): boolean;
}

/** undefined: forward the request; else the status to answer with instead. */
export function decide(req: Request, c: Confinement): { code: number; message: string } | undefined {
  if (req.kind === 'pass') return undefined;
  if (req.kind === 'refuse') return { code: req.code, message: req.message };
  for (const p of req.paths) {
    if (p.path.split('/').includes('..'))
      return { code: FX.PERMISSION_DENIED, message: `${p.path}: ".." is not served` };
    const real = c.resolve(p.path, p.follow);
    if (real === undefined)
      return { code: FX.PERMISSION_DENIED, message: `${p.path}: outside the container's volumes` };
    if (req.write && !c.readWrite)
      return {
        code: FX.PERMISSION_DENIED,
        message: `${p.path}: mounted read-only (--mount=DIR:rw to write)`,
      };
    if (req.write && !c.writable(real))
      return { code: FX.PERMISSION_DENIED, message: `${p.path}: a read-only volume` };
  }
  return undefined;
}

/** An SSH_FXP_STATUS packet, length included. */
export function statusPacket(id: number, code: number, message: string): Buffer {
  const text = Buffer.from(message, 'utf8');
  const b = Buffer.alloc(4 + 1 + 4 + 4 + 4 + text.length + 4);
  let at = b.writeUInt32BE(b.length - 4, 0);
  at = b.writeUInt8(FXP.STATUS, at);
  at = b.writeUInt32BE(id, at);
  at = b.writeUInt32BE(code, at);
  at = b.writeUInt32BE(text.length, at);
  at += text.copy(b, at);
  b.writeUInt32BE(0, at); // language tag: empty
  return b;
}

/** Splits a byte stream into whole packets (length included); throws on one larger than MAX_PACKET. */
export class PacketSplitter {
  private pending: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    while (this.pending.length >= 4) {
      const n = this.pending.readUInt32BE(0);
      if (n === 0 || n > MAX_PACKET) throw new Error(`an SFTP packet of ${n} bytes`);
      if (this.pending.length < 4 + n) break;
      out.push(this.pending.subarray(0, 4 + n));
      this.pending = this.pending.subarray(4 + n);
    }
    return out;
  }
}
