// Tests need bpffs at /sys/fs/bpf: mount it when it is missing, and unmount only a mount made here.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { bpffsMountFor } from '../support.js';

export interface BpffsMount {
  /** True when this process mounted it (and will unmount it). */
  mountedHere: boolean;
  release(): void;
}

export function ensureBpffs(mountPoint = '/sys/fs/bpf'): BpffsMount {
  if (bpffsMountFor(mountPoint) === mountPoint) return { mountedHere: false, release: () => {} };
  fs.mkdirSync(mountPoint, { recursive: true });
  execFileSync('mount', ['-t', 'bpf', 'bpf', mountPoint]);
  let released = false;
  return {
    mountedHere: true,
    release: () => {
      if (released) return;
      released = true;
      // Lazy: a pin a test could not remove must not keep the mount (and the test) hanging.
      execFileSync('umount', ['-l', mountPoint]);
    },
  };
}
