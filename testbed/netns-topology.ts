// Test fixture: a workstation and a cluster in network namespaces, as the root daemon meets them.
//
//   tpv-ws  (workstation)  10.210.0.1 --veth-- 10.210.0.2  tpv-cl (cluster)      default route via tpv-cl
//                                              10.244.0.2   the traffic manager (on lo: in the pod subnet,
//                                                           reached through the default route, so it must
//                                                           never be routed into the VIF)
//                                              10.244.0.53  the cluster's DNS
//                                              10.210.0.2:53 the workstation's original resolver
//           10.211.0.1 --veth-- 10.211.0.2  tpv-pod  (a direct path, only for the bench's baseline)
//   tpv-cl  10.244.1.1 --veth-- 10.244.1.10 tpv-pod (the pod; 10.96.0.10 "service IP" on its lo)
//   IPv6 on the same links: ws fd10:210::1, cl fd10:210::2 and fd10:244:0:1::1, pod fd10:244:0:1::10.
//
// The workstation's /etc/resolv.conf is /etc/netns/tpv-ws/resolv.conf (ip netns exec bind-mounts it), so
// the host's own resolv.conf is never touched. Everything is removed by down(), also on a crash of the test
// process (an exit handler).
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const NS = { ws: 'tpv-ws', cl: 'tpv-cl', pod: 'tpv-pod' } as const;
export const ADDR = {
  ws: '10.210.0.1',
  clusterGateway: '10.210.0.2',
  manager: '10.244.0.2',
  clusterDns: '10.244.0.53',
  originalDns: '10.210.0.2',
  pod: '10.244.1.10',
  service: '10.96.0.10',
  wsDirect: '10.211.0.1',
  podDirect: '10.211.0.2',
  ws6: 'fd10:210::1',
  clusterGateway6: 'fd10:210::2',
  pod6: 'fd10:244:0:1::10',
} as const;
export const POD_SUBNET = '10.244.0.0/16';
export const POD_SUBNET6 = 'fd10:244::/48';
export const SERVICE_SUBNET = '10.96.0.0/12';
export const MANAGER_PORT = 18_700;
export const ORIGINAL_RESOLV_CONF =
  "# the workstation's own resolver (tpv test)\nnameserver 10.210.0.2\nsearch example\noptions timeout:2 attempts:2\n";
export const RESOLV_CONF = `/etc/netns/${NS.ws}/resolv.conf`;

/** The repository's dist/ directory. */
export const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sh(cmd: string, args: string[], timeoutMs = 30_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function must(cmd: string, ...args: string[]): Promise<void> {
  const r = await sh(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.trim()}`);
}

function removeAllSync(procs: Set<ChildProcess>, dirs: string[], pids: Set<number> = new Set()): void {
  for (const p of procs) if (p.exitCode === null && p.pid) spawnSync('kill', ['-9', String(p.pid)]);
  for (const pid of pids) spawnSync('kill', ['-9', String(pid)], { stdio: 'ignore' });
  for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  for (const ns of Object.values(NS)) fs.rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}

export class NetnsLab {
  private readonly procs = new Set<ChildProcess>();
  private readonly dirs: string[] = [];
  /** Processes started by others (the root daemon, detached by launch.ts) that down() must end. */
  private readonly pids = new Set<number>();
  private readonly onExit = () => removeAllSync(this.procs, this.dirs, this.pids);
  /** Scratch directory for sockets, state and logs. */
  readonly tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tpv-'));

  constructor() {
    this.dirs.push(this.tmp);
  }

  async up(): Promise<void> {
    removeAllSync(new Set(), []); // leftovers of an earlier run that was killed
    process.on('exit', this.onExit);
    const { ws, cl, pod } = NS;
    for (const ns of [ws, cl, pod]) {
      await must('ip', 'netns', 'add', ns);
      await must('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    }
    await must(
      'ip',
      '-n',
      ws,
      'link',
      'add',
      'tpv-ws0',
      'type',
      'veth',
      'peer',
      'name',
      'tpv-cl0',
      'netns',
      cl,
    );
    await must('ip', '-n', ws, 'addr', 'add', `${ADDR.ws}/24`, 'dev', 'tpv-ws0');
    await must('ip', '-n', ws, 'link', 'set', 'tpv-ws0', 'up');
    await must('ip', '-n', cl, 'addr', 'add', `${ADDR.clusterGateway}/24`, 'dev', 'tpv-cl0');
    await must('ip', '-n', cl, 'link', 'set', 'tpv-cl0', 'up');
    await must('ip', '-n', ws, 'route', 'add', 'default', 'via', ADDR.clusterGateway);
    await must('ip', '-n', cl, 'addr', 'add', `${ADDR.manager}/32`, 'dev', 'lo');
    await must('ip', '-n', cl, 'addr', 'add', `${ADDR.clusterDns}/32`, 'dev', 'lo');

    await must(
      'ip',
      '-n',
      cl,
      'link',
      'add',
      'tpv-cl1',
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      pod,
    );
    await must('ip', '-n', cl, 'addr', 'add', '10.244.1.1/24', 'dev', 'tpv-cl1');
    await must('ip', '-n', cl, 'link', 'set', 'tpv-cl1', 'up');
    await must('ip', '-n', pod, 'addr', 'add', `${ADDR.pod}/24`, 'dev', 'eth0');
    await must('ip', '-n', pod, 'link', 'set', 'eth0', 'up');
    await must('ip', '-n', pod, 'route', 'add', 'default', 'via', '10.244.1.1');
    await must('ip', '-n', pod, 'addr', 'add', `${ADDR.service}/32`, 'dev', 'lo');
    await must('ip', '-n', cl, 'route', 'add', `${ADDR.service}/32`, 'via', ADDR.pod);

    // IPv6 on the same links: the pod subnet has a v6 half.
    await must('ip', '-n', ws, '-6', 'addr', 'add', `${ADDR.ws6}/64`, 'dev', 'tpv-ws0', 'nodad');
    await must('ip', '-n', cl, '-6', 'addr', 'add', `${ADDR.clusterGateway6}/64`, 'dev', 'tpv-cl0', 'nodad');
    await must('ip', '-n', ws, '-6', 'route', 'add', 'default', 'via', ADDR.clusterGateway6);
    await must('ip', '-n', cl, '-6', 'addr', 'add', 'fd10:244:0:1::1/64', 'dev', 'tpv-cl1', 'nodad');
    await must('ip', '-n', pod, '-6', 'addr', 'add', `${ADDR.pod6}/64`, 'dev', 'eth0', 'nodad');
    await must('ip', '-n', pod, '-6', 'route', 'add', 'default', 'via', 'fd10:244:0:1::1');

    await must(
      'ip',
      '-n',
      ws,
      'link',
      'add',
      'tpv-ws1',
      'type',
      'veth',
      'peer',
      'name',
      'eth1',
      'netns',
      pod,
    );
    await must('ip', '-n', ws, 'addr', 'add', `${ADDR.wsDirect}/24`, 'dev', 'tpv-ws1');
    await must('ip', '-n', ws, 'link', 'set', 'tpv-ws1', 'up');
    await must('ip', '-n', pod, 'addr', 'add', `${ADDR.podDirect}/24`, 'dev', 'eth1');
    await must('ip', '-n', pod, 'link', 'set', 'eth1', 'up');

    // The namespaces' resolv.conf: the workstation's original one, and the cluster's (its DNS service).
    fs.mkdirSync(`/etc/netns/${ws}`, { recursive: true });
    fs.writeFileSync(RESOLV_CONF, ORIGINAL_RESOLV_CONF);
    fs.mkdirSync(`/etc/netns/${cl}`, { recursive: true });
    fs.writeFileSync(`/etc/netns/${cl}/resolv.conf`, `nameserver ${ADDR.clusterDns}\n`);
  }

  /**
   * The cluster side the VIF tests talk to: the cluster's DNS (echo.default -> the Service address), the
   * workstation's original resolver (outside.example), and the pod's HTTP and UDP server.
   */
  async startClusterServers(): Promise<void> {
    this.node(NS.cl, 'testbed/zone-server.js', [
      '--listen',
      `${ADDR.clusterDns}:53`,
      '--zone',
      JSON.stringify({ 'echo.default.svc.cluster.local.': { A: [ADDR.service] } }),
    ]);
    this.node(NS.cl, 'testbed/zone-server.js', [
      '--listen',
      `${ADDR.originalDns}:53`,
      '--zone',
      JSON.stringify({ 'outside.example.': { A: ['192.0.2.7'] } }),
    ]);
    const pod = this.node(NS.pod, 'daemons/root/test/pod-server.js', ['--http', '80', '--udp', '5353']);
    await this.waitForLine(pod, /ready/);
  }

  /** Starts `node dist/<script> args…` in a namespace; it is killed by down(). */
  node(ns: string, script: string, args: string[], env: Record<string, string> = {}): ChildProcess {
    return this.spawnIn(ns, [process.execPath, path.join(DIST, script), ...args], env);
  }

  spawnIn(ns: string, argv: string[], env: Record<string, string> = {}): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', ns, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.procs.add(p);
    p.on('exit', () => this.procs.delete(p));
    let err = '';
    p.stderr!.on('data', (d) => {
      err += d;
      if (err.length > 20_000) err = err.slice(-10_000);
    });
    (p as ChildProcess & { stderrText: () => string }).stderrText = () => err;
    return p;
  }

  /** Runs a command in a namespace and collects its output. */
  exec(ns: string, argv: string[], timeoutMs = 60_000): Promise<ExecResult> {
    return sh('ip', ['netns', 'exec', ns, ...argv], timeoutMs);
  }

  /** Waits for a line of the process's stdout that matches; returns the match. */
  waitForLine(p: ChildProcess, pattern: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms; stderr: ${stderrOf(p)}`));
      }, timeoutMs);
      const onData = (d: Buffer) => {
        buf += d;
        const m = pattern.exec(buf);
        if (m) {
          cleanup();
          resolve(m);
        }
      };
      const onExit = (code: number | null) => {
        cleanup();
        reject(new Error(`the process exited (${code}) before printing ${pattern}; stderr: ${stderrOf(p)}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        p.stdout!.off('data', onData);
        p.off('exit', onExit);
      };
      p.stdout!.on('data', onData);
      p.on('exit', onExit);
    });
  }

  /** Ends a process this lab started (SIGTERM, then SIGKILL) and waits for it. */
  async stop(p: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(signal);
    const timer = setTimeout(() => p.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  }

  /** Makes down() end this process too (by pid, SIGKILL, after asking it with SIGTERM). */
  track(pid: number | undefined): void {
    if (pid) this.pids.add(pid);
  }

  async down(): Promise<void> {
    await Promise.all([...this.procs].map((p) => this.stop(p)));
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        this.pids.delete(pid); // already gone
      }
    }
    if (this.pids.size) await new Promise((r) => setTimeout(r, 1_000));
    removeAllSync(this.procs, this.dirs, this.pids);
    process.off('exit', this.onExit);
  }
}

export function stderrOf(p: ChildProcess): string {
  return ((p as ChildProcess & { stderrText?: () => string }).stderrText?.() ?? '').trim().slice(-2000);
}
