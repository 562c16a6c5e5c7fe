// Can this process use the eBPF capture mechanism here? Answers with a reason a user can act on, so
// tp-init can print why it falls back to iptables.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelHasSkLookup, missingCapabilities } from './capture-config.js';
import { BPF_PROG_TYPE_SK_LOOKUP, libbpf } from './libbpf.js';
import { defaultObjectPath } from './loader.js';
import { DEFAULT_PIN_ROOT } from './steering-keys.js';

export interface SupportReport {
  supported: boolean;
  /** Why not (or, when supported, what was found): one line a user can act on. */
  reason: string;
}

/** The bpffs mount that holds pinRoot, from /proc/self/mounts; undefined when none does. */
export function bpffsMountFor(pinRoot: string, mounts = readMounts()): string | undefined {
  let best: string | undefined;
  for (const line of mounts.split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType !== 'bpf' || !mountPoint) continue;
    const mp = mountPoint.replace(/\\040/g, ' ');
    const inside = pinRoot === mp || pinRoot.startsWith(mp.endsWith('/') ? mp : `${mp}/`);
    if (inside && (!best || mp.length > best.length)) best = mp;
  }
  return best;
}

function readMounts(): string {
  try {
    return fs.readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return '';
  }
}

function effectiveCapabilities(): string {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  return /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
}

/**
 * Checks, cheapest first: the kernel version (sk_lookup exists since 5.9), the capabilities, bpffs at the
 * pin root, libbpf, the compiled program, and finally whether the kernel really loads an sk_lookup
 * program (catches lockdown, seccomp and kernels built without it).
 */
export function probeSupport(
  opts: { pinRoot?: string; objectPath?: string; agentUid?: number } = {},
): SupportReport {
  const no = (reason: string): SupportReport => ({ supported: false, reason });
  if (process.platform !== 'linux') return no(`eBPF capture needs Linux; this is ${process.platform}`);
  const release = os.release();
  if (!kernelHasSkLookup(release)) {
    return no(`Linux ${release} has no sk_lookup programs (they need Linux 5.9 or later)`);
  }
  const missing = missingCapabilities(effectiveCapabilities(), { chown: opts.agentUid !== undefined });
  if (missing.length > 0) {
    return no(
      `the process lacks ${missing.join(' and ')}: give the container these capabilities to use eBPF capture`,
    );
  }
  const pinRoot = opts.pinRoot ?? DEFAULT_PIN_ROOT;
  if (!bpffsMountFor(pinRoot)) {
    const root = path.dirname(pinRoot);
    return no(
      `no bpffs is mounted at ${root}: mount it (\`mount -t bpf bpf ${root}\`; in a pod, a hostPath volume of /sys/fs/bpf)`,
    );
  }
  let bpf: ReturnType<typeof libbpf>;
  try {
    bpf = libbpf();
  } catch (err) {
    return no((err as Error).message);
  }
  const objectPath = opts.objectPath ?? defaultObjectPath();
  if (!fs.existsSync(objectPath)) {
    return no(`the eBPF program ${objectPath} is missing: build tp with clang and libbpf-dev installed`);
  }
  const probe = bpf.probeProgType(BPF_PROG_TYPE_SK_LOOKUP);
  if (probe !== 1) {
    return no(
      `the kernel refused a test sk_lookup program (${probe === 0 ? 'not supported' : `error ${-probe}`}): kernel lockdown, a seccomp profile or a kernel built without BPF networking`,
    );
  }
  return {
    supported: true,
    reason: `Linux ${release} supports sk_lookup; bpffs at ${bpffsMountFor(pinRoot)}`,
  };
}
