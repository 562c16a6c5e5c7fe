// A pod network namespace and a client namespace joined by a veth, IPv4 and IPv6: the pod the capture
// tests (init-container/test) and the capture bench (bench/capture.ts) put tp-init's rules and the agent
// in. Names start with `tpc-`; everything (namespaces, the processes started in them) is removed by
// destroy(), and by an exit handler when the test or bench dies first.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { type CommandResult, runCommand } from '../lab/command.js';

// Absolute, so a test may run a command with a PATH that lacks /usr/sbin.
const IP = fs.existsSync('/usr/sbin/ip') ? '/usr/sbin/ip' : '/sbin/ip';

export interface NamespaceProcess {
  child: ChildProcess;
  /** Everything the process wrote so far (stdout and stderr), for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

export class PodNetwork {
  readonly pod: string;
  readonly client: string;
  readonly podIp: string;
  readonly clientIp: string;
  readonly podIp6: string;
  readonly clientIp6: string;
  private readonly processes = new Set<NamespaceProcess>();
  private destroyed = false;
  private readonly onExit = () => this.destroySync();

  /**
   * A network of this process alone: `name` and the PID, so that two runs of the same user at once (two
   * benches) cannot remove each other's namespaces, as a fixed name does at construction. The namespaces
   * of earlier runs of `name` whose process is gone (killed before their exit handler ran) are removed
   * first; what those runs started is not touched.
   */
  static ofThisProcess(name: string, index: number): PodNetwork {
    const earlier = new RegExp(`^tpc-${name}(\\d+)-(pod|cli)$`);
    const present = fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : [];
    for (const ns of present) {
      const pid = Number(earlier.exec(ns)?.[1] ?? 0);
      if (pid > 0 && !alive(pid)) execFileSync(IP, ['netns', 'del', ns], { stdio: 'ignore' });
    }
    return new PodNetwork(`${name}${process.pid}`, index);
  }

  /** `name` keeps namespaces of concurrent users apart; `index` (1-250) picks the subnets and veth names. */
  constructor(name: string, index: number) {
    this.pod = `tpc-${name}-pod`;
    this.client = `tpc-${name}-cli`;
    this.podIp = `10.231.${index}.2`;
    this.clientIp = `10.231.${index}.1`;
    this.podIp6 = `fd00:7463:${index}::2`;
    this.clientIp6 = `fd00:7463:${index}::1`;
    const vethPod = `tpc${index}p`;
    const vethClient = `tpc${index}c`;
    this.destroySync(); // namespaces left by a crashed earlier run
    this.destroyed = false;
    process.on('exit', this.onExit);
    const ip = (...args: string[]) => execFileSync(IP, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    ip('netns', 'add', this.pod);
    ip('netns', 'add', this.client);
    ip(
      'link',
      'add',
      vethClient,
      'netns',
      this.client,
      'type',
      'veth',
      'peer',
      'name',
      vethPod,
      'netns',
      this.pod,
    );
    for (const [ns, dev, v4, v6] of [
      [this.pod, vethPod, this.podIp, this.podIp6],
      [this.client, vethClient, this.clientIp, this.clientIp6],
    ] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', `${v4}/24`, 'dev', dev);
      ip('-n', ns, 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad');
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
  }

  /** Runs a command in a namespace and waits for it (never throws on a non-zero exit). */
  exec(
    ns: string,
    command: string,
    args: string[],
    options: { input?: string; env?: NodeJS.ProcessEnv } = {},
  ): Promise<CommandResult> {
    return runCommand([IP, 'netns', 'exec', ns, command, ...args], {
      ...options,
      check: false,
      timeoutMs: 120_000,
    });
  }

  /** Starts a long-running process in a namespace; `ip netns exec` execs it, so the PID is the process's. */
  start(ns: string, command: string, args: string[], env: NodeJS.ProcessEnv = process.env): NamespaceProcess {
    const child = spawn(IP, ['netns', 'exec', ns, command, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const proc: NamespaceProcess = {
      child,
      output: () => output,
      stop: async () => {
        this.processes.delete(proc);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(timer);
        }
      },
    };
    this.processes.add(proc);
    return proc;
  }

  async destroy(): Promise<void> {
    for (const p of [...this.processes]) await p.stop();
    this.destroySync();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('exit', this.onExit);
    for (const p of this.processes) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    for (const ns of [this.pod, this.client]) {
      if (fs.existsSync(`/run/netns/${ns}`)) execFileSync(IP, ['netns', 'del', ns], { stdio: 'ignore' });
    }
  }
}

/** Whether a process with this PID exists (signal 0 checks without sending anything). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
