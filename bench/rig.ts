// Shared by the benchmarks: start the real tp binaries (and helper processes) on loopback, free ports,
// wait for conditions, and kill everything by pid at the end.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/ (this file runs as dist/bench/rig.js). */
export const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs;
  while (!(await Promise.resolve(check()).catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** User + system CPU time of a process so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export class Processes {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpf-bench-'));
  readonly env: NodeJS.ProcessEnv = {
    ...process.env,
    TP_RUN_DIR: path.join(this.dir, 'run'),
    TP_LOG_DIR: path.join(this.dir, 'log'),
    TP_LOG_LEVEL: 'warn',
  };
  private readonly children: ChildProcess[] = [];
  private readonly extraPids: number[] = [];

  node(name: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const out = fs.openSync(path.join(this.dir, `${name}.log`), 'a');
    const child = spawn(process.execPath, args, {
      env: { ...this.env, ...env },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    this.children.push(child);
    return child;
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
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (process.env.TP_KEEP_BENCH_DIRS !== '1') fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Starts manager + agent + user daemon with an intercept of appPort to localPort. Returns the agent's pid. */
export async function startIntercept(
  p: Processes,
  ports: { manager: number; app: number; agent: number; local: number },
): Promise<{ agentPid: number; managerPid: number; daemonPid: number }> {
  const manager = p.node('manager', [
    path.join(dist, 'manager/main.js'),
    '--standalone',
    '--listen',
    `127.0.0.1:${ports.manager}`,
  ]);
  const agent = p.node('agent', [path.join(dist, 'bundle/tp-agent.cjs')], {
    TP_MANAGER_ADDRESS: `127.0.0.1:${ports.manager}`,
    TP_WORKLOAD_NAME: 'bench',
    TP_NAMESPACE: 'default',
    TP_POD_NAME: 'bench-0',
    TP_POD_IP: '127.0.0.1',
    TP_PORTS: `${ports.app}:${ports.agent}`,
    TP_LISTEN_ADDRESS: '127.0.0.1',
  });
  await waitFor('the manager', () => canConnect(ports.manager));
  await waitFor('the agent', () => canConnect(ports.agent));
  p.tp('connect', '--manager-address', `127.0.0.1:${ports.manager}`);
  const daemonPid = (JSON.parse(p.tp('status', '-o', 'json')) as { daemon: { pid: number } }).daemon.pid;
  p.adopt(daemonPid);
  await waitFor('the agent to arrive', () => JSON.parse(p.tp('list', '-o', 'json')).workloads.length > 0);
  p.tp('intercept', 'bench', '--port', `${ports.local}:${ports.app}`);
  return { agentPid: agent.pid!, managerPid: manager.pid!, daemonPid };
}
