// Remote mounts, the workstation's side: sshfs in passive mode (SFTP on its stdin/stdout, no SSH) on a
// socket pair whose other end is a tunnel flow to the agent's sftp-server (agent/file-server.ts). Each
// mount is remembered in the run directory (mounts.json) before sshfs starts, so a daemon killed with
// -9 leaves a record: the next daemon's connect unmounts what is left (lazily: a dead sshfs leaves a
// mount that answers "Transport endpoint is not connected") and removes the directories it made.
// A flow that breaks under a live mount (the manager restarted, the agent's pod went) leaves the mount
// point and record in place: `onLost` is told, and `remount` attaches a new sshfs there once the
// intercept is back.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../../logging/logger.js';
import type { FlowOutcome } from '../../tunnel/flow.js';
import { type ProcessSocket, spawnOnSocket } from '../../tunnel/process-socket.js';

const log = createLogger('user/mounts');
const run = promisify(execFile);
const MOUNT_WAIT_MS = 10_000;

export interface MountRecord {
  /** The intercept or ingest it belongs to. */
  name: string;
  mountPoint: string;
  /** The daemon made the directory (and removes it after unmounting). */
  created: boolean;
  /** Asked writable (--mount=DIR:rw); the agent still refuses writes on read-only volumes. */
  readWrite?: boolean;
}

/** sshfs's options: SFTP on stdin/stdout, read-only unless asked, symlinks resolved on the agent's side. */
export function sshfsArgs(mountPoint: string, readWrite = false): string[] {
  // follow_symlinks: a ConfigMap volume is a farm of relative symlinks into ..data; the workstation sees
  // files. -f: stay in the foreground, so the process (and its socket) is the daemon's to end.
  return ['-f', '-o', `passive,${readWrite ? '' : 'ro,'}follow_symlinks,fsname=tp`, 'tp:', mountPoint];
}

/** Whether a path is a mount point now (/proc/self/mountinfo, octal escapes decoded). */
export function isMounted(mountPoint: string, mountinfo = readMountinfo()): boolean {
  const want = path.resolve(mountPoint);
  return mountinfo.split('\n').some((line) => {
    const field = line.split(' ')[4];
    return (
      field !== undefined &&
      field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))) === want
    );
  });
}

function readMountinfo(): string {
  try {
    return fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return '';
  }
}

export type OpenFlow = (socket: net.Socket) => Promise<FlowOutcome>;

export class RemoteMounts {
  /** sshfs undefined: the flow broke and the mount waits for `remount`. */
  private readonly live = new Map<string, { record: MountRecord; sshfs: ProcessSocket | undefined }>();
  /** Told when the flow under a live mount breaks (not when tp unmounts it): remount when back. */
  onLost: ((name: string) => void) | undefined;

  constructor(private readonly stateFile: string) {}

  /**
   * Mounts the volumes of intercept `name` at `mountPoint` (or a new directory under the temp dir):
   * `open` pumps the socket through a mount flow. Resolves with the mount point once it is mounted.
   */
  async mount(name: string, mountPoint: string, readWrite: boolean, open: OpenFlow): Promise<string> {
    let created = false;
    let dir = mountPoint;
    if (!dir) {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `tp-mount-${name.replace(/[^A-Za-z0-9_.-]/g, '_')}-`));
      created = true;
    } else if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      created = true;
    } else if (isMounted(dir) || fs.readdirSync(dir).length > 0) {
      throw new Error(`the mount point ${dir} is not an empty directory: choose another with --mount=DIR`);
    }
    dir = path.resolve(dir);
    const record: MountRecord = { name, mountPoint: dir, created, readWrite };
    this.save([...this.records().filter((r) => r.name !== name), record]);
    this.live.set(name, { record, sshfs: undefined });
    try {
      await this.attach(record, open);
    } catch (e) {
      await this.unmount(name);
      throw e;
    }
    return dir;
  }

  /** A mount whose flow broke: a new sshfs at the same mount point, through a new flow. */
  async remount(name: string, open: OpenFlow): Promise<void> {
    const live = this.live.get(name);
    if (!live || live.sshfs) return;
    // The dead sshfs's mount, if the lazy unmount has not finished.
    if (isMounted(live.record.mountPoint))
      await run('fusermount', ['-u', '-z', live.record.mountPoint]).catch(() => {});
    await this.attach(live.record, open);
  }

  /** Whether `name` has a mount waiting for `remount`. */
  isLost(name: string): boolean {
    const live = this.live.get(name);
    return live !== undefined && live.sshfs === undefined;
  }

  private async attach(record: MountRecord, open: OpenFlow): Promise<void> {
    const { name, mountPoint: dir } = record;
    let sshfs: ProcessSocket;
    try {
      sshfs = await spawnOnSocket('sshfs', sshfsArgs(dir, record.readWrite));
    } catch (e) {
      throw new Error(
        `sshfs cannot start: ${(e as Error).message}; install it (Debian: apt-get install sshfs)`,
      );
    }
    const live = this.live.get(name);
    if (!live) {
      sshfs.child.kill('SIGTERM');
      throw new Error(`the mount of ${name} was ended meanwhile`);
    }
    live.sshfs = sshfs;
    let flow: Promise<FlowOutcome>;
    try {
      flow = open(sshfs.socket);
    } catch (e) {
      sshfs.child.kill('SIGTERM');
      live.sshfs = undefined;
      throw e;
    }
    const exited = new Promise<void>((resolve) => sshfs.child.once('exit', () => resolve()));
    let mounted = false;
    void flow.then(async (o) => {
      log.info('mount flow ended', {
        intercept: name,
        outcome: o.kind,
        reason: 'reason' in o ? o.reason : undefined,
      });
      const current = this.live.get(name);
      // Ours to end only while this sshfs is the live one (an unmount or a remount replaced it).
      if (current?.sshfs !== sshfs) return;
      // The far side is gone (the agent, the manager, the session): nothing is served any more.
      if (sshfs.child.exitCode === null) sshfs.child.kill('SIGTERM');
      current.sshfs = undefined;
      if (!mounted) return;
      // An sshfs blocked on an answer that will never come does not end on SIGTERM.
      if (!(await Promise.race([exited.then(() => true), sleep(2000).then(() => false)]))) {
        sshfs.child.kill('SIGKILL');
        await exited;
      }
      // A dead sshfs leaves "Transport endpoint is not connected" behind: detach it, keep the directory.
      if (isMounted(dir)) await run('fusermount', ['-u', '-z', dir]).catch(() => {});
      log.info('mount lost; it is mounted again when the intercept is back', {
        intercept: name,
        mountPoint: dir,
      });
      this.onLost?.(name);
    });
    const deadline = Date.now() + MOUNT_WAIT_MS;
    while (!isMounted(dir)) {
      const gone = await Promise.race([exited.then(() => true), sleep(100).then(() => false)]);
      if (gone || Date.now() > deadline) {
        const outcome = await Promise.race([flow, sleep(200).then(() => undefined)]);
        const why =
          outcome && outcome.kind !== 'closed' ? outcome.reason : sshfs.stderr() || 'no answer within 10 s';
        if (live.sshfs === sshfs) live.sshfs = undefined;
        if (sshfs.child.exitCode === null) sshfs.child.kill('SIGTERM');
        throw new Error(`cannot mount the volumes at ${dir}: ${why}`);
      }
    }
    mounted = true;
    log.info('mounted', {
      intercept: name,
      mountPoint: dir,
      access: record.readWrite ? 'read-write' : 'read-only',
    });
  }

  /** Unmounts one intercept's volumes (lazily if busy) and removes the directory the daemon made. */
  async unmount(name: string): Promise<void> {
    const live = this.live.get(name);
    this.live.delete(name);
    const record = live?.record ?? this.records().find((r) => r.name === name);
    if (!record) return;
    await this.release(record);
    if (live?.sshfs && live.sshfs.child.exitCode === null) live.sshfs.child.kill('SIGTERM');
  }

  async unmountAll(): Promise<void> {
    const names = new Set([...this.live.keys(), ...this.records().map((r) => r.name)]);
    for (const name of names) await this.unmount(name);
  }

  /** After a crash: what the state file still names is unmounted and its directories removed. */
  async cleanStale(): Promise<MountRecord[]> {
    const stale = this.records().filter((r) => !this.live.has(r.name));
    for (const r of stale) {
      log.info('removing a mount left by an earlier daemon', { intercept: r.name, mountPoint: r.mountPoint });
      await this.release(r);
    }
    return stale;
  }

  /** Where `name`'s volumes are mounted, and whether writable (also while waiting to be mounted again). */
  mountOf(name: string): { mountPoint: string; readWrite: boolean } | undefined {
    const r = this.live.get(name)?.record;
    return r && { mountPoint: r.mountPoint, readWrite: r.readWrite === true };
  }

  private async release(record: MountRecord): Promise<void> {
    if (isMounted(record.mountPoint)) {
      try {
        await run('fusermount', ['-u', record.mountPoint]);
      } catch {
        // Busy (a shell inside it) or the sshfs is dead: detach it now, the kernel finishes later.
        await run('fusermount', ['-u', '-z', record.mountPoint]).catch((e: Error) =>
          log.warn('cannot unmount', { mountPoint: record.mountPoint, reason: e.message }),
        );
      }
    }
    // rmdir, never a recursive remove: if the unmount did not happen the remote files stay untouched.
    if (record.created && !isMounted(record.mountPoint))
      try {
        fs.rmdirSync(record.mountPoint);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
          log.warn('cannot remove the mount point', {
            mountPoint: record.mountPoint,
            reason: (e as Error).message,
          });
      }
    this.save(this.records().filter((r) => r.name !== record.name || r.mountPoint !== record.mountPoint));
  }

  private records(): MountRecord[] {
    try {
      return JSON.parse(fs.readFileSync(this.stateFile, 'utf8')) as MountRecord[];
    } catch {
      return [];
    }
  }

  private save(records: MountRecord[]): void {
    if (records.length === 0) {
      fs.rmSync(this.stateFile, { force: true });
      return;
    }
    fs.writeFileSync(this.stateFile, `${JSON.stringify(records, null, 2)}\n`, { mode: 0o600 });
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
