// Tests and benches need bpffs at /sys/fs/bpf: mount it when it is missing, and unmount only a mount made
// here. Several test files and benches may run at once on one machine (each in its own process), so the
// mount is shared: each user registers as a holder (a file named after its PID, under a lock), and the
// last holder to leave unmounts it, and only if a tp test mounted it. A mount that was there before (the
// host's) is never touched; holders that died without releasing are pruned.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bpffsMountFor } from '../bpf/support.js';
import { pidExists } from './processes.js';

export interface BpffsMount {
  /** True when the mount was made by a tp test or bench (it goes when its last user releases it). */
  mountedHere: boolean;
  release(): void;
}

const STATE_DIR = '/run/tp-test-bpffs';
const LOCK = path.join(STATE_DIR, 'lock');
/** Present while the mount at the mount point is one a tp test made. */
const MARKER = 'mounted-by-tp-tests';
let holderSeq = 0;

/** Runs `fn` holding the lock file (created exclusively); a lock left by a dead process is taken over. */
function locked<T>(fn: () => T): T {
  fs.mkdirSync(STATE_DIR, { recursive: true });
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      fs.writeFileSync(LOCK, String(process.pid), { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(fs.readFileSync(LOCK, 'utf8') || 0);
      if (owner && !pidExists(owner)) fs.rmSync(LOCK, { force: true });
      else if (Date.now() > until) throw new Error(`${LOCK} is held by process ${owner}`);
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(LOCK, { force: true });
  }
}

/** The live holders of the mount at `mountPoint` (the files of dead ones are removed). */
function holders(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((name) => {
    if (pidExists(Number(name.split('-')[0]))) return true;
    fs.rmSync(path.join(dir, name), { force: true });
    return false;
  });
}

export function ensureBpffs(mountPoint = '/sys/fs/bpf'): BpffsMount {
  const dir = path.join(STATE_DIR, mountPoint.replaceAll('/', '_'));
  const marker = path.join(STATE_DIR, `${path.basename(dir)}.${MARKER}`);
  const holder = path.join(dir, `${process.pid}-${++holderSeq}`);
  const mountedHere = locked(() => {
    holders(dir);
    if (bpffsMountFor(mountPoint) !== mountPoint) {
      fs.mkdirSync(mountPoint, { recursive: true });
      execFileSync('mount', ['-t', 'bpf', 'bpf', mountPoint]);
      fs.writeFileSync(marker, '');
    }
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(holder, '');
    return fs.existsSync(marker);
  });
  let released = false;
  return {
    mountedHere,
    release: () => {
      if (released) return;
      released = true;
      locked(() => {
        fs.rmSync(holder, { force: true });
        if (holders(dir).length > 0) return;
        fs.rmSync(dir, { recursive: true, force: true });
        if (!fs.existsSync(marker)) return;
        fs.rmSync(marker, { force: true });
        // Lazy: a pin a test could not remove must not keep the mount (and the test) hanging.
        if (bpffsMountFor(mountPoint) === mountPoint) execFileSync('umount', ['-l', mountPoint]);
      });
    },
  };
}
