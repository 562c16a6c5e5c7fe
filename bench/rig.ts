// What the benchmarks share: their flags, the real tp binaries (and helper processes) started on
// loopback and killed by pid at the end, the numbers read from /proc, and the median they report.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AGENT_NODE_FLAGS } from '../agent/node-flags.js';
import { waitFor } from '../command/wait.js';
import { UsageError } from '../netaddr/parse.js';
import { canConnect } from '../testbed/loopback.js';

/** dist/ (this file runs as dist/bench/rig.js). */
export const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Generous: the machine may be busy with other work while a bench starts its processes. */
const STARTUP_TIMEOUT_MS = 20_000;

/**
 * A bench's command line: `--NAME N` for each of `numbers` (a positive whole number; the value given
 * here is the default) and `--NAME` for each of `switches`. Anything else is a UsageError.
 */
export function benchFlags<N extends string, S extends string = never>(
  numbers: Record<N, number>,
  switches: readonly S[] = [],
  argv: string[] = process.argv.slice(2),
): Record<N, number> & Record<S, boolean> {
  const names = Object.keys(numbers) as N[];
  const usage = [...names.map((n) => `[--${n} ${numbers[n]}]`), ...switches.map((s) => `[--${s}]`)].join(' ');
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: Object.fromEntries([
        ...names.map((n) => [n, { type: 'string' as const }]),
        ...switches.map((s) => [s, { type: 'boolean' as const }]),
      ]),
    }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message}; this bench takes ${usage}`);
  }
  const flags: Record<string, number | boolean> = {};
  for (const n of names) {
    const given = values[n];
    const value = given === undefined ? numbers[n] : Number(given);
    if (!Number.isInteger(value) || value < 1)
      throw new UsageError(`--${n} must be a positive whole number, not ${given}`);
    flags[n] = value;
  }
  for (const s of switches) flags[s] = values[s] === true;
  return flags as Record<N, number> & Record<S, boolean>;
}

/** The middle value (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/**
 * The process's anonymous memory (heaps, stacks, buffers): its RSS without the pages of files it maps, of
 * which the node binary's are most and are shared with every other node process (and, in a pod, charged
 * to the container that touched them first).
 */
export function anonymousMiB(pid: number): number {
  const m = /^Anonymous:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** User + system CPU time of a process so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** CPU seconds so far of a process and all its descendants (a command started through wrappers). */
export function treeCpuSeconds(pid: number): number {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone meanwhile
    }
  }
  let total = 0;
  for (const todo = [pid]; todo.length > 0; ) {
    const p = todo.pop()!;
    try {
      total += cpuSeconds(p);
    } catch {
      // gone meanwhile
    }
    todo.push(...(children.get(p) ?? []));
  }
  return total;
}

export class Processes {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpf-bench-'));
  readonly env: NodeJS.ProcessEnv = {
    ...process.env,
    TP_RUN_DIR: path.join(this.dir, 'run'),
    TP_LOG_DIR: path.join(this.dir, 'log'),
    TP_LOG_LEVEL: 'warn',
  };
  private readonly children: { name: string; child: ChildProcess }[] = [];
  private readonly extraPids: number[] = [];

  node(name: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const out = fs.openSync(path.join(this.dir, `${name}.log`), 'a');
    const child = spawn(process.execPath, args, {
      env: { ...this.env, ...env },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    this.children.push({ name, child });
    return child;
  }

  /**
   * What went wrong while starting: each process that has already exited (and how), and the end of every
   * log, so a bench that timed out in CI says why (the directory itself is removed by close()).
   */
  diagnosis(): string {
    const lines: string[] = [];
    for (const { name, child } of this.children) {
      if (child.exitCode !== null || child.signalCode !== null)
        lines.push(`${name} (pid ${child.pid}) exited: ${child.exitCode ?? child.signalCode}`);
    }
    const logs = [this.dir, path.join(this.dir, 'log')].flatMap((d) =>
      fs.existsSync(d)
        ? fs
            .readdirSync(d)
            .filter((f) => f.endsWith('.log'))
            .map((f) => path.join(d, f))
        : [],
    );
    for (const file of logs) {
      const tail = fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-15).join('\n');
      if (tail) lines.push(`--- ${path.relative(this.dir, file)}:\n${tail}`);
    }
    return lines.join('\n');
  }

  /** Runs `start`; a failure carries diagnosis(). */
  async starting<T>(start: () => Promise<T>): Promise<T> {
    try {
      return await start();
    } catch (e) {
      (e as Error).message += `\n${this.diagnosis()}`;
      throw e;
    }
  }

  /** Runs the tp CLI to completion; throws with its stderr on failure. */
  tp(...args: string[]): string {
    return execFileSync(process.execPath, [path.join(dist, 'cli/main.js'), ...args], {
      env: this.env,
      encoding: 'utf8',
    });
  }

  /** A process not started by node() (the user daemon) that close() must kill. */
  adopt(pid: number): void {
    this.extraPids.push(pid);
  }

  close(): void {
    for (const pid of this.extraPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const { child } of this.children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (process.env.TP_KEEP_BENCH_DIRS !== '1') fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Waits until something accepts connections on 127.0.0.1:port; `what` names it in the timeout. */
export async function waitForListener(what: string, port: number): Promise<void> {
  await waitFor(what, () => canConnect(port), STARTUP_TIMEOUT_MS);
}

/**
 * Starts a standalone manager and an agent in front of the app on `ports.app` (passthrough on
 * `ports.agent`), and waits until both listen.
 */
export async function startManagerAndAgent(
  p: Processes,
  ports: { manager: number; app: number; agent: number; direct?: number },
): Promise<{ managerPid: number; agentPid: number }> {
  const manager = p.node('manager', [
    path.join(dist, 'manager/main.js'),
    '--standalone',
    '--listen',
    `127.0.0.1:${ports.manager}`,
  ]);
  const agent = p.node('agent', [...AGENT_NODE_FLAGS, path.join(dist, 'bundle/tp-agent.cjs')], {
    TP_MANAGER_ADDRESS: `127.0.0.1:${ports.manager}`,
    TP_WORKLOAD_NAME: 'bench',
    TP_NAMESPACE: 'default',
    TP_POD_NAME: 'bench-0',
    TP_POD_IP: '127.0.0.1',
    TP_PORTS: `${ports.app}:${ports.agent}`,
    TP_LISTEN_ADDRESS: '127.0.0.1',
    // The agent's own service: an intercepting client on this machine takes its connections directly.
    ...(ports.direct ? { TP_DIRECT_PORT: String(ports.direct) } : {}),
  });
  await p.starting(async () => {
    await waitForListener('the manager', ports.manager);
    await waitForListener('the agent', ports.agent);
  });
  return { managerPid: manager.pid!, agentPid: agent.pid! };
}

/**
 * Starts manager + agent + user daemon with an intercept of appPort to localPort; `interceptFlags` are
 * added to `tp intercept` (a personal intercept's --http-header).
 */
export async function startIntercept(
  p: Processes,
  ports: { manager: number; app: number; agent: number; local: number; direct?: number },
  interceptFlags: string[] = [],
): Promise<{ agentPid: number; managerPid: number; daemonPid: number }> {
  const { managerPid, agentPid } = await startManagerAndAgent(p, ports);
  return p.starting(async () => {
    p.tp('connect', '--manager-address', `127.0.0.1:${ports.manager}`);
    const daemonPid = (JSON.parse(p.tp('status', '-o', 'json')) as { daemon: { pid: number } }).daemon.pid;
    p.adopt(daemonPid);
    await waitFor(
      'the agent to arrive',
      () => JSON.parse(p.tp('list', '-o', 'json')).workloads.length > 0,
      STARTUP_TIMEOUT_MS,
    );
    p.tp('intercept', 'bench', '--port', `${ports.local}:${ports.app}`, ...interceptFlags);
    return { agentPid, managerPid, daemonPid };
  });
}
