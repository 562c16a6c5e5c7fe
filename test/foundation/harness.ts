// Runs the real tp binaries on loopback for the foundation tests: tp-manager, tp-agent (the bundle), the
// tp CLI and the user daemon it starts, plus small apps. Each rig has its own run and log directories and
// free ports, and kills every process it started (by pid) when it is closed.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../../command/wait.js';
import { canConnect } from '../../testbed/loopback.js';

/** dist/, where the built binaries are (this file runs as dist/test/foundation/harness.js). */
export const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const bins = {
  manager: path.join(dist, 'manager/main.js'),
  agent: path.join(dist, 'bundle/tp-agent.cjs'),
  cli: path.join(dist, 'cli/main.js'),
};

/** An HTTP app answering every request with a fixed text. */
export async function httpApp(port: number, text: string): Promise<{ close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.end(`${text}\n`));
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** GET http://127.0.0.1:port/ with a fresh connection; the body, trimmed. */
export function httpGet(port: number, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(body.trim()));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

/** GET http://127.0.0.1:port<path> with a fresh connection: the status and the body, trimmed. */
export function httpAnswer(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

/** Whether a process runs; a zombie (exited, waiting to be reaped by its adopter) does not. */
export function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Runs a scenario on a fresh Rig: when it fails, prints the logs of the rig's processes; always closes
 * the rig (and what the scenario handed to rig.closeWith).
 */
export async function withRig(scenario: (rig: Rig) => Promise<void>): Promise<void> {
  const rig = new Rig();
  try {
    await scenario(rig);
  } catch (e) {
    console.error(rig.dump());
    throw e;
  } finally {
    await rig.close();
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class Rig {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpf-'));
  readonly env: NodeJS.ProcessEnv;
  private readonly procs = new Map<string, ChildProcess>();
  private daemonPids = new Set<number>();
  private readonly closers: (() => unknown)[] = [];
  /** close() for a process that ends before it (a test file stopped by the runner, SIGTERM). */
  private readonly onExit = () => this.closeSync();

  constructor() {
    this.env = {
      ...process.env,
      TP_RUN_DIR: path.join(this.dir, 'run'),
      TP_LOG_DIR: path.join(this.dir, 'log'),
      TP_LOG_LEVEL: 'debug',
    };
    process.on('exit', this.onExit);
  }

  /** Starts a process with its output in <dir>/<name>.log. */
  start(name: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const out = fs.openSync(path.join(this.dir, `${name}.log`), 'a');
    const child = spawn(process.execPath, args, {
      env: { ...this.env, ...env },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    this.procs.set(name, child);
    return child;
  }

  /** Starts tp-manager and waits until it accepts connections. */
  async startManager(port: number, extra: string[] = []): Promise<ChildProcess> {
    const child = this.start('manager', [
      bins.manager,
      '--standalone',
      '--listen',
      `127.0.0.1:${port}`,
      ...extra,
    ]);
    await waitFor('the manager to listen', () => canConnect(port), 20_000);
    return child;
  }

  startAgent(
    managerPort: number,
    appPort: number,
    agentPort: number,
    env: NodeJS.ProcessEnv = {},
  ): ChildProcess {
    return this.start('agent', [bins.agent], {
      TP_MANAGER_ADDRESS: `127.0.0.1:${managerPort}`,
      TP_WORKLOAD_NAME: 'echo',
      TP_NAMESPACE: 'default',
      TP_POD_NAME: 'echo-0',
      TP_POD_IP: '127.0.0.1',
      TP_PORTS: `${appPort}:${agentPort}`,
      ...env,
    });
  }

  /** Stops a process started by start() and waits for it to exit. */
  async kill(name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.procs.get(name);
    if (!child) return;
    this.procs.delete(name);
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
  }

  log(name: string): string {
    try {
      return fs.readFileSync(path.join(this.dir, `${name}.log`), 'utf8');
    } catch {
      return '';
    }
  }

  daemonLog(): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'log', 'connector.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Runs the tp CLI. */
  tp(...args: string[]): Promise<CliResult> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [bins.cli, ...args], {
        env: this.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => {
        stdout += d;
      });
      child.stderr.on('data', (d) => {
        stderr += d;
      });
      child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  /** tp with -o json, parsed; fails on a non-zero exit. */
  async tpJson<T = Record<string, unknown>>(...args: string[]): Promise<T> {
    const r = await this.tp(...args, '-o', 'json');
    if (r.code !== 0) throw new Error(`tp ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  /** Remembers the user daemon's pid so close() can kill it if tp quit did not happen. */
  async noteDaemon(): Promise<number> {
    const st = await this.tpJson<{ daemon?: { pid: number } }>('status');
    if (!st.daemon) throw new Error('the user daemon is not running');
    this.daemonPids.add(st.daemon.pid);
    return st.daemon.pid;
  }

  /** Runs `closer` when the rig closes, after its processes are gone (the apps a scenario started). */
  closeWith(closer: () => unknown): void {
    this.closers.push(closer);
  }

  /**
   * Kills everything this rig started, runs what closeWith registered, and removes its directory (keeps
   * it when TP_KEEP_TEST_DIRS=1).
   */
  async close(): Promise<void> {
    process.off('exit', this.onExit);
    this.killDaemons();
    for (const name of [...this.procs.keys()]) await this.kill(name, 'SIGKILL');
    for (const closer of this.closers.splice(0)) await closer();
    this.removeDir();
  }

  /**
   * What close() does, synchronously, for the 'exit' of a test process that never reached close(): a user
   * daemon the test did not note is asked to quit (`tp quit`, bounded), then every process is killed.
   */
  private closeSync(): void {
    if (fs.existsSync(path.join(this.env.TP_RUN_DIR!, 'connector.sock'))) {
      try {
        execFileSync(process.execPath, [bins.cli, 'quit'], {
          env: this.env,
          stdio: 'ignore',
          timeout: 10_000,
        });
      } catch {
        // Killed below if noted; the message of the failing test says more than this would.
      }
    }
    this.killDaemons();
    for (const child of this.procs.values()) child.kill('SIGKILL');
    this.removeDir();
  }

  private killDaemons(): void {
    for (const pid of this.daemonPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  private removeDir(): void {
    if (process.env.TP_KEEP_TEST_DIRS !== '1') fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** The logs of every process, for a failing test's message. */
  dump(): string {
    const names = ['manager', 'agent'];
    return [
      ...names.map((n) => `--- ${n}.log\n${this.log(n).slice(-4000)}`),
      `--- connector.log\n${this.daemonLog().slice(-4000)}`,
    ].join('\n');
  }
}
