// Remote mounts, the workstation's side: sshfs in passive mode (SFTP on its stdin/stdout, no SSH) on a
// socket pair whose other end is a tunnel flow to the agent's sftp-server (agent/file-server.ts). Each
// mount is remembered in the run directory (mounts.json) before sshfs starts, so a daemon killed with
// -9 leaves a record: the next daemon's connect unmounts what is left (lazily: a dead sshfs leaves a
// mount that answers "Transport endpoint is not connected") and removes the directories it made.
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
}

/** sshfs's options: SFTP on stdin/stdout, read-only, symlinks resolved on the agent's side. */
export function sshfsArgs(mountPoint: string): string[] {
  // follow_symlinks: a ConfigMap volume is a farm of relative symlinks into ..data; the workstation sees
  // files. -f: stay in the foreground, so the process (and its socket) is the daemon's to end.
  return ['-f', '-o', 'passive,ro,follow_symlinks,fsname=tp', 'tp:', mountPoint];
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

export class RemoteMounts {
  private readonly live = new Map<string, { record: MountRecord; sshfs: ProcessSocket }>();

  constructor(private readonly stateFile: string) {}

  /**
   * Mounts the volumes of intercept `name` at `mountPoint` (or a new directory under the temp dir):
   * `open` pumps the socket through a mount flow. Resolves with the mount point once it is mounted.
   */
  async mount(
    name: string,
    mountPoint: string,
    open: (socket: net.Socket) => Promise<FlowOutcome>,
  ): Promise<string> {
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
    const record: MountRecord = { name, mountPoint: dir, created };
    this.save([...this.records().filter((r) => r.name !== name), record]);
    let sshfs: ProcessSocket;
    try {
      sshfs = await spawnOnSocket('sshfs', sshfsArgs(dir));
    } catch (e) {
      await this.release(record);
      throw new Error(
        `sshfs cannot start: ${(e as Error).message}; install it (Debian: apt-get install sshfs)`,
      );
    }
    this.live.set(name, { record, sshfs });
    let flow: Promise<FlowOutcome>;
    try {
      flow = open(sshfs.socket);
    } catch (e) {
      await this.unmount(name);
      throw e;
    }
    void flow.then((o) => {
      log.info('mount flow ended', {
        intercept: name,
        outcome: o.kind,
        reason: 'reason' in o ? o.reason : undefined,
      });
      // The far side is gone (the agent, or the session): nothing is served any more.
      if (this.live.get(name)?.sshfs === sshfs) sshfs.child.kill('SIGTERM');
    });
    const exited = new Promise<void>((resolve) => sshfs.child.once('exit', () => resolve()));
    const deadline = Date.now() + MOUNT_WAIT_MS;
    while (!isMounted(dir)) {
      const gone = await Promise.race([exited.then(() => true), sleep(100).then(() => false)]);
      if (gone || Date.now() > deadline) {
        const outcome = await Promise.race([flow, sleep(200).then(() => undefined)]);
        const why =
          outcome && outcome.kind !== 'closed' ? outcome.reason : sshfs.stderr() || 'no answer within 10 s';
        await this.unmount(name);
        throw new Error(`cannot mount the volumes at ${dir}: ${why}`);
      }
    }
    log.info('mounted', { intercept: name, mountPoint: dir });
    return dir;
  }

  /** Unmounts one intercept's volumes (lazily if busy) and removes the directory the daemon made. */
  async unmount(name: string): Promise<void> {
    const live = this.live.get(name);
    this.live.delete(name);
    const record = live?.record ?? this.records().find((r) => r.name === name);
    if (!record) return;
    await this.release(record);
    if (live && live.sshfs.child.exitCode === null) live.sshfs.child.kill('SIGTERM');
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

  mountPointOf(name: string): string | undefined {
    return this.live.get(name)?.record.mountPoint;
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
