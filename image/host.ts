// The thin edge between the image builder and this machine: file metadata, ldd, busybox's applet list,
// strip, ldconfig, the node binary's version. A missing tool or file is one UsageError naming the
// Debian package to install. Every host path read is recorded with its metadata, so a later build can
// tell in a few stat calls whether anything it used has changed.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';
import { type LddResult, parseLdd } from './ldd.js';
import type { HostStat, HostView } from './rootfs.js';
import { releaseScratch, trackScratch } from './scratch.js';

/** The Debian package of each host tool the builder runs. */
const TOOL_PACKAGES: Record<string, string> = {
  ldd: 'libc-bin',
  ldconfig: 'libc-bin',
  strip: 'binutils',
  unshare: 'util-linux',
  gcc: 'gcc',
};

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A tool's absolute path from PATH (and the sbin directories, where ldconfig lives). */
export function findTool(tool: string): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, tool);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  const pkg = TOOL_PACKAGES[tool];
  throw new UsageError(
    `the image builder needs \`${tool}\`, which is not installed${pkg ? `: install it (apt-get install ${pkg})` : ''}`,
  );
}

/** Runs a tool to its end; a non-zero exit is a result, only a failure to start is an error. */
export function run(file: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

async function runChecked(file: string, args: string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) {
    const detail = (r.stderr || r.stdout).trim().split('\n').slice(-3).join('; ');
    throw new UsageError(`\`${path.basename(file)} ${args.join(' ')}\` failed (exit ${r.code}): ${detail}`);
  }
  return r.stdout;
}

/** The prefix of an input that stands for a directory's listing rather than a path's metadata. */
const LISTING = 'listing:';

/**
 * What can change a host input's content or meaning, cheaply: a later build compares these. A
 * directory only as such (its mtime moves whenever anything beside the files used changes); a
 * listing (copyDir) by its names.
 */
export function currentSignature(input: string): string {
  try {
    if (input.startsWith(LISTING)) {
      const names = fs.readdirSync(input.slice(LISTING.length)).sort();
      return createHash('sha256').update(names.join('\n')).digest('hex');
    }
    const st = fs.lstatSync(input);
    return st.isDirectory() ? 'dir' : `${st.mode}:${st.size}:${st.mtimeMs}:${st.ino}`;
  } catch {
    return 'missing';
  }
}

function toHostStat(st: fs.Stats): HostStat {
  const type = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  return { type, mode: st.mode, size: st.size };
}

/**
 * The host as one or more builds see it: results of ldd, busybox and strip are kept for the session's
 * life (builds in one session share the stripped node and so its layer), in a scratch directory that
 * close() removes.
 */
export class LocalHost {
  private readonly scratch: string;
  private readonly ldds = new Map<string, Promise<LddResult>>();
  private readonly stripped = new Map<string, Promise<{ path: string; size: number }>>();
  private counter = 0;

  constructor() {
    this.scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-image-'));
    trackScratch(this.scratch);
  }

  /** A HostView that records every host path it reads into `inputs` (path -> signature). */
  view(inputs: Map<string, string>): HostView {
    const record = (file: string) => {
      if (!inputs.has(file)) inputs.set(file, currentSignature(file));
    };
    const tool = (name: string) => {
      const file = findTool(name);
      record(file);
      return file;
    };
    return {
      lstat: async (file) => {
        record(file);
        try {
          return toHostStat(await fs.promises.lstat(file));
        } catch {
          return undefined;
        }
      },
      readlink: (file) => fs.promises.readlink(file),
      readdir: async (dir) => {
        record(`${LISTING}${dir}`);
        return fs.promises.readdir(dir);
      },
      ldd: (file) => {
        record(tool('ldd'));
        // ldd answers from the host's loader cache: a changed cache can change the closure.
        record('/etc/ld.so.cache');
        let result = this.ldds.get(file);
        if (result === undefined) {
          result = run(tool('ldd'), [file]).then((r) => parseLdd(r.stdout + r.stderr, r.code, file));
          this.ldds.set(file, result);
        }
        return result;
      },
      busyboxApplets: async (file) => {
        const out = await runChecked(file, ['--list-full']);
        return out.split('\n').filter((l) => l.trim() !== '');
      },
      strip: (file) => {
        const strip = tool('strip');
        let result = this.stripped.get(file);
        if (result === undefined) {
          const out = path.join(this.scratch, `stripped-${this.counter++}-${path.basename(file)}`);
          result = runChecked(strip, ['--strip-unneeded', '-o', out, file]).then(() => ({
            path: out,
            size: fs.statSync(out).size,
          }));
          this.stripped.set(file, result);
        }
        return result;
      },
    };
  }

  /** A fresh directory inside the session's scratch directory. */
  scratchDir(name: string): string {
    const dir = path.join(this.scratch, `${name}-${this.counter++}`);
    fs.mkdirSync(dir);
    return dir;
  }

  close(): void {
    releaseScratch(this.scratch);
  }
}

/**
 * Runs `ldconfig -r ROOT` (it chroots: as root directly, otherwise in a user namespace where this user
 * is root) and returns the /etc/ld.so.cache it wrote there.
 */
export async function ldconfigCache(root: string, inputs: Map<string, string>): Promise<Buffer> {
  const ldconfig = findTool('ldconfig');
  inputs.set(ldconfig, currentSignature(ldconfig));
  // -X: no links are created or updated; the image's symlinks are exactly those declared.
  const args = ['-X', '-r', root];
  const isRoot = process.getuid?.() === 0;
  const r = isRoot
    ? await run(ldconfig, args)
    : await run(findTool('unshare'), ['--map-root-user', ldconfig, ...args]);
  if (r.code !== 0) {
    throw new UsageError(
      `ldconfig could not build the image's /etc/ld.so.cache (exit ${r.code}: ${r.stderr.trim()})${isRoot ? '' : ': it must chroot; run the build as root or allow unprivileged user namespaces'}`,
    );
  }
  return fs.readFileSync(path.join(root, 'etc', 'ld.so.cache'));
}

/** Checks that a node binary is Node 20 or newer (tp's engines); returns its version (v20.20.2). */
export async function nodeVersion(binary: string): Promise<string> {
  let r: RunResult;
  try {
    r = await run(binary, ['--version']);
  } catch {
    throw new UsageError(
      `${binary} cannot run: the image needs the node binary of Node 20 or newer (--node PATH)`,
    );
  }
  const version = r.stdout.trim();
  const major = /^v(\d+)\./.exec(version)?.[1];
  if (r.code !== 0 || major === undefined) {
    throw new UsageError(
      `${binary} --version answered ${JSON.stringify(version)}: is it a node binary? (--node PATH)`,
    );
  }
  if (Number(major) < 20) {
    throw new UsageError(
      `${binary} is Node ${version}; tp needs Node 20 or newer: install it, or pass --node PATH`,
    );
  }
  return version;
}
