// A scratch containerd for the image tests: its own root, state, socket, runc root and FIFOs under one
// temporary directory, only the plugins an image import and `ctr run` need (no CRI: the images are
// imported into the k8s.io namespace and run with ctr; the lab's real node runs the CRI path). Everything
// it started is removed by destroy() — containers, tasks, shims, mounts, the directory — and by an exit
// handler when the test dies first. Containers run without a cgroup path of their own (`--cgroup ""`),
// so runc creates and removes one per container and leaves no parent cgroup behind.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Test } from 'uvu';
import { waitFor } from '../command/wait.js';
import { type CommandResult, onPath, runCommand } from '../lab/command.js';
import { pidExists } from './processes.js';
import { requirementSuite } from './suite.js';

const NAMESPACE = 'k8s.io';
const TOOLS = ['containerd', 'ctr', 'runc', 'containerd-shim-runc-v2'];
/** The shims' sockets: containerd 1.6 puts them here whatever its configuration says. */
const SHIM_SOCKETS = '/run/containerd/s';

/** Why a scratch containerd (and `extraTools`) cannot run here; undefined: it can. */
export function containerdUnavailable(extraTools: string[] = []): string | undefined {
  if (process.getuid?.() !== 0) return 'containerd needs root';
  const missing = [...TOOLS, ...extraTools].filter((t) => !onPath(t));
  if (missing.length > 0)
    return `${missing.join(', ')} not installed (apt-get install containerd runc ${extraTools.join(' ')})`;
  return undefined;
}

/**
 * An uvu suite for tests on a scratch containerd. Where it cannot run (not root, tools missing) the
 * suite says why and skips; under CI (CI=true) that is a failure instead, so CI cannot go green by
 * losing containerd.
 */
export function containerdSuite(title: string, extraTools: string[] = []): { test: Test; ready: boolean } {
  return requirementSuite(title, containerdUnavailable(extraTools));
}

export interface RunOptions {
  /** The host's network namespace (loopback servers). */
  netHost?: boolean;
  env?: Record<string, string>;
  /** Every capability, devices, sysfs read-write (ctr --privileged). */
  privileged?: boolean;
  /** ctr --mount values, e.g. type=bpf,src=bpf,dst=/sys/fs/bpf,options=rw. */
  mounts?: string[];
  /** Killed after this long (default 60 s). */
  timeoutMs?: number;
}

export interface RunningContainer {
  id: string;
  /** What ctr has printed so far (the container's stdout and stderr). */
  output(): string;
  /** The container's end: ctr's exit code is the container's. */
  exited: Promise<CommandResult>;
  signal(signal: NodeJS.Signals): Promise<void>;
  /** The container's init process as the host sees it. */
  hostPid(): Promise<number>;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export class ScratchContainerd {
  readonly socket: string;
  private readonly log: string;
  private readonly ownsRunDir = !fs.existsSync('/run/containerd');
  private daemon: ChildProcess | undefined;
  private counter = 0;
  private destroyed = false;
  private readonly onExit = () => this.destroySync();

  private constructor(
    readonly dir: string,
    private readonly name: string,
  ) {
    this.socket = path.join(dir, 'containerd.sock');
    this.log = path.join(dir, 'containerd.log');
  }

  static async start(name: string): Promise<ScratchContainerd> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tpc-${name}-`));
    const c = new ScratchContainerd(dir, name);
    process.on('exit', c.onExit);
    try {
      await c.launch();
    } catch (err) {
      c.destroySync();
      throw err;
    }
    return c;
  }

  private async launch(): Promise<void> {
    const config = path.join(this.dir, 'config.toml');
    fs.writeFileSync(
      config,
      [
        'version = 2',
        `root = "${this.dir}/root"`,
        `state = "${this.dir}/state"`,
        // Not needed for import and ctr run: the CRI (the lab's node has it, with restrict_oom_score_adj,
        // which this machine needs for sandboxes), the opt plugin (it would write /opt/containerd), tracing.
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.aufs"]',
        '[grpc]',
        `  address = "${this.socket}"`,
        '[ttrpc]',
        `  address = "${this.socket}.ttrpc"`,
        '[debug]',
        '  address = ""',
        '[metrics]',
        '  address = ""',
        '',
      ].join('\n'),
    );
    const out = fs.openSync(this.log, 'a');
    this.daemon = spawn('containerd', ['--config', config], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const daemon = this.daemon;
    await waitFor(
      () => `containerd to answer on ${this.socket} (log: ${this.logTail()})`,
      async () => {
        if (daemon.exitCode !== null)
          throw new Error(`containerd exited ${daemon.exitCode}: ${this.logTail()}`);
        return (await this.ctr(['version'])).code === 0;
      },
      20_000,
      200,
    );
  }

  logTail(): string {
    try {
      return fs.readFileSync(this.log, 'utf8').trim().split('\n').slice(-5).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** `ctr -a SOCKET -n k8s.io ARGS` (never throws on a non-zero exit). */
  ctr(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
    return runCommand(['ctr', '-a', this.socket, '-n', NAMESPACE, ...args], { check: false, timeoutMs });
  }

  async importArchive(archive: string): Promise<CommandResult> {
    return this.ctr(['images', 'import', archive], 300_000);
  }

  private runArgs(image: string, id: string, args: string[], options: RunOptions): string[] {
    return [
      'ctr',
      '-a',
      this.socket,
      '-n',
      NAMESPACE,
      'run',
      '--rm',
      '--cgroup',
      '',
      '--fifo-dir',
      path.join(this.dir, 'fifo'),
      '--runc-root',
      path.join(this.dir, 'runc'),
      ...(options.netHost ? ['--net-host'] : []),
      ...(options.privileged ? ['--privileged'] : []),
      ...(options.mounts ?? []).flatMap((m) => ['--mount', m]),
      ...Object.entries(options.env ?? {}).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
      image,
      id,
      ...args,
    ];
  }

  private idOf(n: number): string {
    return `tpc-${this.name}-${process.pid}-${n}`;
  }

  private nextId(): string {
    return this.idOf(this.counter++);
  }

  /** Runs a container to its end (`ctr run --rm`); its output and exit code. */
  run(image: string, args: string[], options: RunOptions = {}): Promise<CommandResult> {
    return this.start(image, args, options).exited;
  }

  /** Starts a container and returns at once; `exited` settles when it ends. */
  start(image: string, args: string[], options: RunOptions = {}): RunningContainer {
    const id = this.nextId();
    const argv = this.runArgs(image, id, args, options);
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(
      () => void this.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]),
      options.timeoutMs ?? 60_000,
    );
    const exited = new Promise<CommandResult>((resolve) =>
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
      }),
    );
    return {
      id,
      output: () => stdout + stderr,
      exited,
      signal: async (signal) => {
        await this.ctr(['tasks', 'kill', '-s', signal, id]);
      },
      hostPid: async () => {
        const r = await this.ctr(['tasks', 'ls']);
        const line = r.stdout.split('\n').find((l) => l.split(/\s+/)[0] === id);
        const pid = Number(line?.split(/\s+/)[1]);
        if (!pid) throw new Error(`no task ${id} in: ${r.stdout}`);
        return pid;
      },
    };
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }

  private ctrSync(args: string[]): string {
    try {
      return execFileSync('ctr', ['-a', this.socket, '-n', NAMESPACE, ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 30_000,
      });
    } catch {
      return '';
    }
  }

  /** The shims our containerd started: their command line names its socket. */
  private shimPids(): number[] {
    const pids: number[] = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        if (path.basename(argv[0] ?? '').startsWith('containerd-shim') && argv.includes(this.socket))
          pids.push(Number(entry));
      } catch {
        // Gone meanwhile.
      }
    }
    return pids;
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('exit', this.onExit);
    const daemon = this.daemon;
    if (daemon?.pid !== undefined && daemon.exitCode === null) {
      const lines = (args: string[]) =>
        this.ctrSync(args)
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean);
      for (const id of lines(['tasks', 'ls', '-q'])) {
        this.ctrSync(['tasks', 'kill', '-s', 'SIGKILL', id]);
        this.ctrSync(['tasks', 'delete', '-f', id]);
      }
      for (const id of lines(['containers', 'ls', '-q'])) this.ctrSync(['containers', 'delete', id]);
      daemon.kill('SIGTERM');
      for (let i = 0; i < 50 && pidExists(daemon.pid); i++) sleepSync(100);
      if (pidExists(daemon.pid)) daemon.kill('SIGKILL');
    }
    const shims = this.shimPids();
    for (const pid of shims) process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 30 && shims.some(pidExists); i++) sleepSync(100);
    // Rootfs and snapshot mounts under our directory, deepest first.
    const mounts = fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    fs.rmSync(this.dir, { recursive: true, force: true });
    // A shim removes its socket as it ends, unless it was killed first: containerd 1.6 names it by the
    // hash of its address, namespace and container ID.
    for (let n = 0; n < this.counter; n++) {
      const key = createHash('sha256')
        .update(path.join(this.socket, NAMESPACE, this.idOf(n)))
        .digest('hex');
      fs.rmSync(path.join(SHIM_SOCKETS, key), { force: true });
    }
    // The directory containerd made for them goes if it was ours and is empty.
    if (this.ownsRunDir) {
      for (const d of [SHIM_SOCKETS, '/run/containerd']) {
        try {
          fs.rmdirSync(d);
        } catch {
          // In use by another containerd, or never made.
        }
      }
    }
  }
}
