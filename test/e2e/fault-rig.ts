// The fault harness the lab's fault suite (faults.test.ts) and bench/faults.ts share: one
// intercepted Deployment, a probe from the lab node to its Service every 0.25 s (`curl -m 3`, as the faults
// issue defines it), and each fault injected only inside the lab's namespaces. Each fault returns what
// the probe saw: failed requests, and seconds from the moment the fault was over (the new manager pod
// Ready, the agent killed, the new intercept created, the drop lifted, the restart finished) until the
// workstation answered again.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MANAGER_GAP_MS } from '../../daemons/root/tunnel-dialer.js';
import { runCommand } from '../../lab/command.js';
import { pidExists } from '../../testbed/processes.js';
import { type Cluster, tpLabMain } from './cluster.js';
import {
  apply,
  type Background,
  ensureChart,
  freshNamespace,
  kubectl,
  kubectlJson,
  listPods,
  MANAGER_NS,
  MANAGER_SELECTOR,
  onWorkstation,
  rolloutStatus,
  startOnWorkstation,
  type TpRunner,
  tpOnWorkstation,
  waitFor,
} from './kube.js';
import { ECHO_PORT, echoDeployment, echoService } from './workloads.js';

const WORKLOAD = 'fecho';
/** A workload nobody intercepts: the workstation's probe reaches its Service through the VIF. */
const VIF_WORKLOAD = 'vecho';
const LOCAL_PORT = 18090;
const PROBE_INTERVAL_S = 0.25;

/** One probe request: who answered (the workstation, the app in the cluster) or that it failed. */
export interface ProbeSample {
  /** When the request was sent, and when it was over (answered or failed). */
  at: number;
  end: number;
  outcome: 'workstation' | 'app' | 'failed';
  detail: string;
  /** The request's whole time (curl's time_total), seconds; undefined for a failed one. */
  seconds?: number;
}

/** What one fault did to the probe. */
export interface FaultResult {
  fault: string;
  requests: number;
  failed: ProbeSample[];
  /** Seconds from the end of the fault until the workstation answered again (undefined: it did not). */
  backSeconds: number | undefined;
  /** The workstation's requests through the VIF to a Service nobody intercepts, and those that failed. */
  vifRequests: number;
  vifFailed: ProbeSample[];
  /** The slowest of the workstation's answered requests through the VIF, seconds (a held connection). */
  vifSlowestSeconds: number;
  /** Fault-specific findings, for the report. */
  notes: string[];
  /**
   * The user daemon killed: who answered the request the workstation held when its daemon died ('app',
   * 'workstation'), or how it failed.
   */
  heldRequest?: string;
  /** The agent killed: how often the kubelet restarted the tp-agent container meanwhile. */
  containerRestarts?: number;
}

interface AgentContainer {
  restartCount: number;
  processes: {
    pid: number;
    args: string;
    worker: boolean;
    holder: boolean;
    rssKiB: number;
    anonKiB: number;
  }[];
  /** The container cgroup's memory charge (memory.usage_in_bytes / memory.current). */
  memoryBytes: number | undefined;
}

/** "holder RSS 44 MiB (7 MiB anonymous), worker RSS 80 MiB (40 MiB anonymous), container memory 90 MiB". */
function memoryNote(c: AgentContainer): string {
  const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
  const parts = c.processes
    .filter((p) => p.holder || p.worker)
    .map((p) => `${p.holder ? 'holder' : 'worker'} RSS ${mib(p.rssKiB)} (${mib(p.anonKiB)} anonymous)`);
  if (c.memoryBytes !== undefined) parts.push(`container memory ${mib(c.memoryBytes / 1024)}`);
  return parts.join(', ');
}

/**
 * Requests every 0.25 s until stop(): from the lab node to the intercepted Service (the cluster side,
 * `curl -m 3`), or from the workstation through the VIF to a Service nobody intercepts. Through the VIF a
 * new connection waits for a manager that is being replaced, its SYN held, for up to MANAGER_GAP_MS (the
 * new pod's start: 1-3 s on the lab): that probe's client waits as long, so what fails it is tp refusing
 * or losing the request, not a node slow to start a pod; how long the slowest took is reported.
 */
class Probe {
  readonly samples: ProbeSample[] = [];
  private readonly child;
  private rest = '';

  /** `argv` runs a shell command (the loop) where the probe runs; `app` starts the bodies of the app's pods. */
  constructor(argv: string[], url: string, app: string, timeoutS = 3) {
    const loop =
      `while :; do t=$(date +%s%3N); r=$(curl -s -m ${timeoutS} -w ' %{time_total}' ${url}) || r="FAILED curl exit $?"; ` +
      // Unquoted: a body's newline becomes a space, so the line stays "SENT OVER BODY SECONDS".
      `echo "$t $(date +%s%3N)" $r; sleep ${PROBE_INTERVAL_S}; done`;
    this.child = spawn(argv[0]!, [...argv.slice(1), loop], {
      stdio: ['ignore', 'pipe', 'ignore'],
      detached: true,
    });
    this.child.stdout.setEncoding('utf8').on('data', (d: string) => {
      const lines = (this.rest + d).split('\n');
      this.rest = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^(\d+) (\d+) (.*)$/.exec(line.trim());
        if (!m) continue;
        const words = m[3]!.split(' ');
        const body = words[0] ?? '';
        const time = words.at(-1);
        const outcome = body === 'laptop' ? 'workstation' : body.startsWith(`${app}-`) ? 'app' : 'failed';
        const seconds = outcome === 'failed' ? undefined : Number(time);
        this.samples.push({
          at: Number(m[1]),
          end: Number(m[2]),
          outcome,
          detail: outcome === 'failed' ? m[3]! : body,
          seconds,
        });
      }
    });
    process.on('exit', this.stop);
  }

  /** From the lab node. */
  static fromNode(url: string, app: string): Probe {
    return new Probe([process.execPath, tpLabMain, 'exec', '--node', '--', 'sh', '-c'], url, app);
  }

  /** From the workstation's namespace (through tp's VIF for a cluster address). */
  static fromWorkstation(c: Cluster, url: string, app: string): Probe {
    return new Probe([...c.workstationPrefix, 'sh', '-c'], url, app, MANAGER_GAP_MS / 1000);
  }

  /**
   * The requests in progress at any time from `from` to `to`: sent then, or sent before and over after
   * `from` (a request held across the start of a fault, which the fault may fail).
   */
  between(from: number, to: number): ProbeSample[] {
    return this.samples.filter((s) => s.at <= to && s.end >= from);
  }

  /**
   * Waits for the first answer of `outcome` (any, when undefined) sent at or after `from`; its time, or
   * undefined after timeoutMs. The probe sends one request at a time, so every one sent before is over then.
   */
  async first(
    outcome: ProbeSample['outcome'] | undefined,
    from: number,
    timeoutMs: number,
  ): Promise<number | undefined> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = this.samples.find((x) => x.at >= from && (outcome === undefined || x.outcome === outcome));
      if (s) return s.at;
      if (Date.now() > until) return undefined;
      await sleep(100);
    }
  }

  /** Ends the probe's whole process group: tp-lab exec or nsenter, the shell loop and a running curl. */
  readonly stop = (): void => {
    process.off('exit', this.stop);
    try {
      if (this.child.pid) process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
}

/**
 * The laptop app: answers "laptop" on 127.0.0.1:LOCAL_PORT in the workstation; /slow after 3 s (a request
 * the workstation holds while its daemon is killed), printing "slow request" when it arrives.
 */
const laptopApp = `require('node:http').createServer((q, s) => {
    if (q.url !== '/slow') return s.end('laptop');
    console.log('slow request');
    setTimeout(() => s.end('laptop'), 3000);
  }).listen(${LOCAL_PORT}, '127.0.0.1', () => console.log('laptop app listening'));`;

export class FaultRig {
  private probe!: Probe;
  private vifProbe!: Probe;
  /** The intercepted Service's URL from the node. */
  private url = '';
  private laptop!: Background;
  private readonly tp: TpRunner;
  private installedChart = false;
  private readonly iptablesRules: string[][] = [];
  /** The drop rules go also when the process dies mid-fault (synchronously: 'exit' waits for nothing). */
  private readonly onExit = () => {
    for (const rule of this.iptablesRules.splice(0).reverse()) {
      const argv = [...this.c.workstationPrefix, 'iptables', '-w', '-D', ...rule.slice(1)];
      spawnSync(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    }
  };

  private constructor(
    readonly c: Cluster,
    readonly namespace: string,
    private readonly scratch: string,
    private readonly say: (line: string) => void,
  ) {
    fs.rmSync(scratch, { recursive: true, force: true });
    fs.mkdirSync(scratch, { recursive: true });
    this.tp = tpOnWorkstation(c, scratch, {
      TP_ROOT_DAEMON_SOCKET: `${scratch}/root.socket`,
      TP_ROOT_DAEMON_STATE_DIR: `${scratch}/root-state`,
    });
  }

  /** The chart (installed when missing), the workload, tp connect + intercept, and the probe answering "laptop". */
  static async start(
    c: Cluster,
    namespace: string,
    scratch: string,
    say: (line: string) => void = () => {},
  ): Promise<FaultRig> {
    const rig = new FaultRig(c, namespace, scratch, say);
    process.on('exit', rig.onExit);
    try {
      await rig.setUp();
    } catch (e) {
      await rig.stop();
      throw e;
    }
    return rig;
  }

  private async setUp(): Promise<void> {
    const c = this.c;
    this.say(`namespace ${this.namespace}, Deployment ${WORKLOAD}`);
    await freshNamespace(c, this.namespace);
    await apply(
      c,
      [
        echoDeployment(c, WORKLOAD, 1),
        echoService(WORKLOAD),
        echoDeployment(c, VIF_WORKLOAD, 1),
        echoService(VIF_WORKLOAD),
      ],
      this.namespace,
    );
    this.installedChart = await ensureChart(c, this.tp);
    await rolloutStatus(c, this.namespace, WORKLOAD);
    await rolloutStatus(c, this.namespace, VIF_WORKLOAD);
    this.laptop = startOnWorkstation(c, [process.execPath, '-e', laptopApp]);
    await this.laptop.waitForOutput(/laptop app listening/);
    await this.connectAndIntercept();
    await rolloutStatus(c, this.namespace, WORKLOAD);
    const clusterIp = async (service: string) =>
      (
        await kubectlJson<{ spec: { clusterIP: string } }>(c, [
          'get',
          'service',
          service,
          '-n',
          this.namespace,
        ])
      ).spec.clusterIP;
    this.url = `http://${await clusterIp(WORKLOAD)}:80/`;
    this.probe = Probe.fromNode(this.url, WORKLOAD);
    // By name, as a user's app asks: the VIF's DNS is part of what must ride out a fault.
    this.vifProbe = Probe.fromWorkstation(c, `http://${VIF_WORKLOAD}/`, VIF_WORKLOAD);
    if ((await this.probe.first('workstation', Date.now(), 60_000)) === undefined)
      throw new Error(`the intercepted Service never answered "laptop": ${this.lastSamples(this.probe)}`);
    if ((await this.vifProbe.first('app', Date.now(), 30_000)) === undefined)
      throw new Error(
        `the workstation never reached ${VIF_WORKLOAD} through the VIF: ${this.lastSamples(this.vifProbe)}`,
      );
    // A healthy intercept's requests, each on a new connection: their whole time bounds the agent's dial
    // to the workstation from above (the workstation dial deadline must stay far above it).
    const from = Date.now();
    await sleep(5_000);
    const times = this.probe
      .between(from, Date.now())
      .filter((s) => s.outcome === 'workstation')
      .map((s) => s.seconds! * 1000)
      .sort((a, b) => a - b);
    this.healthy = {
      requests: times.length,
      p50Ms: times[Math.floor(times.length / 2)] ?? Number.NaN,
      maxMs: times.at(-1) ?? Number.NaN,
    };
    this.say(
      `healthy intercept: ${times.length} requests, each on a new connection: p50 ${this.healthy.p50Ms.toFixed(1)} ms, max ${this.healthy.maxMs.toFixed(1)} ms`,
    );
  }

  /** The requests through the healthy intercept before any fault (a bound on the agent's dial). */
  healthy: { requests: number; p50Ms: number; maxMs: number } | undefined;

  private async connectAndIntercept(): Promise<void> {
    this.say(`tp connect, tp intercept ${WORKLOAD} --port ${LOCAL_PORT}:${ECHO_PORT}`);
    await this.tp(['connect', '-n', this.namespace]);
    await this.tp(['intercept', WORKLOAD, '-n', this.namespace, '--port', `${LOCAL_PORT}:${ECHO_PORT}`]);
  }

  private lastSamples(probe: Probe): string {
    return probe.samples
      .slice(-5)
      .map((s) => `${new Date(s.at).toISOString()} ${s.detail}`)
      .join('; ');
  }

  /**
   * Runs a fault: `inject` does it and returns when it is over (the time the intercept's return is counted
   * from); then waits for the workstation to answer and for `settleMs` more, and counts the failures from
   * the start of the fault until then.
   */
  private async measure(
    fault: string,
    inject: (notes: string[]) => Promise<number>,
    backTimeoutMs = 60_000,
    settleMs = 1_000,
  ): Promise<FaultResult> {
    this.say(`fault: ${fault}`);
    const notes: string[] = [];
    const began = Date.now();
    const over = await inject(notes);
    const back = await this.probe.first('workstation', over, backTimeoutMs);
    await sleep(settleMs);
    // A request through the VIF held across the fault (up to MANAGER_GAP_MS) counts in this fault's window.
    await this.vifProbe.first(undefined, over, MANAGER_GAP_MS + 5_000);
    const seen = this.probe.between(began, Date.now());
    const vif = this.vifProbe.between(began, Date.now());
    const result: FaultResult = {
      fault,
      requests: seen.length,
      failed: seen.filter((s) => s.outcome === 'failed'),
      vifRequests: vif.length,
      vifFailed: vif.filter((s) => s.outcome === 'failed'),
      vifSlowestSeconds: Math.max(0, ...vif.map((s) => s.seconds ?? 0)),
      backSeconds: back === undefined ? undefined : Math.max(0, (back - over) / 1000),
      notes,
    };
    const how = (failed: ProbeSample[]) => {
      const counts = new Map<string, number>();
      for (const f of failed) counts.set(f.detail, (counts.get(f.detail) ?? 0) + 1);
      return [...counts].map(([d, n]) => ` (${d}: ${n})`).join('');
    };
    this.say(
      `  ${result.failed.length} of ${result.requests} requests failed${how(result.failed)}, ${result.vifFailed.length} of ${result.vifRequests} through the VIF${how(result.vifFailed)} (slowest ${result.vifSlowestSeconds.toFixed(1)} s); the intercept back ${result.backSeconds === undefined ? 'never' : `after ${result.backSeconds.toFixed(1)} s`}${notes.length ? `; ${notes.join('; ')}` : ''}`,
    );
    return result;
  }

  /** `kubectl delete pod` of the manager; over when the new manager pod is Ready. */
  managerPodDeleted(): Promise<FaultResult> {
    return this.measure('manager pod deleted', async (notes) => {
      const selector = MANAGER_SELECTOR;
      const old = (await listPods(this.c, MANAGER_NS, selector)).map((p) => p.name);
      const deleted = Date.now();
      await kubectl(this.c, ['delete', 'pod', '-n', MANAGER_NS, '--wait=false', ...old]);
      await waitFor(
        'a new manager pod to be Ready',
        async () =>
          (await listPods(this.c, MANAGER_NS, selector)).some(
            (p) => p.ready && !p.deleting && !old.includes(p.name),
          ),
        180_000,
        100,
      );
      notes.push(`the new pod Ready ${((Date.now() - deleted) / 1000).toFixed(1)} s after the delete`);
      return Date.now();
    });
  }

  /**
   * kill -9 of the agent worker, the process that serves traffic: the child of tp-agent-holder (PID 1 of
   * the agent container), found through the pod's cgroup by container id. Notes the container's restart
   * count after (the holder restarts the worker: the kubelet sees no restart) and its memory.
   */
  agentKilled(): Promise<FaultResult> {
    let container: AgentContainer | undefined;
    return this.measure(
      'agent killed (-9)',
      async (notes) => {
        container = await this.agentContainer();
        const worker = container.processes.find((p) => p.worker);
        if (!worker)
          throw new Error(
            `no agent worker in the tp-agent container (processes: ${container.processes.map((p) => `${p.pid} ${p.args}`).join('; ')}): is its command tp-agent-holder?`,
          );
        notes.push(`killed the worker, pid ${worker.pid}`, memoryNote(container));
        process.kill(worker.pid, 'SIGKILL');
        return Date.now();
      },
      10_000,
    ).then(async (r) => {
      const after = await this.agentContainer();
      r.containerRestarts = after.restartCount - (container?.restartCount ?? 0);
      r.notes.push(`container restarts: ${r.containerRestarts}`);
      return r;
    });
  }

  private async agentContainer(): Promise<AgentContainer> {
    const pods = await kubectlJson<{
      items: {
        metadata: { uid: string; deletionTimestamp?: string };
        status: { containerStatuses?: { name: string; containerID?: string; restartCount: number }[] };
      }[];
    }>(this.c, ['get', 'pods', '-n', this.namespace, '-l', `app=${WORKLOAD}`]);
    const pod = pods.items.find((p) => !p.metadata.deletionTimestamp);
    if (!pod) throw new Error(`no ${WORKLOAD} pod`);
    const status = pod.status.containerStatuses?.find((s) => s.name === 'tp-agent');
    const id = status?.containerID?.replace(/^.*:\/\//, '');
    if (!status || !id) throw new Error(`the ${WORKLOAD} pod has no running tp-agent container`);
    for (const root of ['/sys/fs/cgroup/pids/tplab/kubepods', '/sys/fs/cgroup/tplab/kubepods'])
      for (const qos of ['', 'burstable', 'besteffort']) {
        const dir = path.join(root, qos, `pod${pod.metadata.uid}`, id);
        const procs = path.join(dir, 'cgroup.procs');
        if (!fs.existsSync(procs)) continue;
        const pids = fs.readFileSync(procs, 'utf8').split('\n').filter(Boolean).map(Number);
        if (pids.length === 0) continue;
        const processes = pids.map((pid) => {
          const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
          const ppid = Number(/^\d+ \(.*\) \S (\d+)/.exec(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1]);
          const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
          const kib = (field: string) =>
            Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
          return {
            pid,
            args: args.join(' '),
            // The holder's child running tp-agent (not an sftp-server of a mount).
            worker: pids.includes(ppid) && args.some((a) => a.endsWith('/tp-agent')),
            holder: args.some((a) => a.endsWith('/tp-agent-holder')),
            rssKiB: kib('VmRSS'),
            anonKiB: kib('RssAnon'),
          };
        });
        // cgroup v1 (the lab) keeps memory in its own hierarchy; v2 beside cgroup.procs.
        const memory = [
          path.join(dir.replace('/pids/', '/memory/'), 'memory.usage_in_bytes'),
          path.join(dir, 'memory.current'),
        ].find((f) => fs.existsSync(f));
        const bytes = memory ? Number(fs.readFileSync(memory, 'utf8').trim()) : undefined;
        return { restartCount: status.restartCount, processes, memoryBytes: bytes };
      }
    throw new Error(`no cgroup with processes for the tp-agent container ${id}`);
  }

  /**
   * kill -9 of the user daemon (a laptop crash), then `tp connect` + `tp intercept` at once; over when the
   * intercept command returned.
   */
  async userDaemonKilled(): Promise<FaultResult> {
    let held: Promise<string> | undefined;
    const result = await this.measure(
      'user daemon killed (-9), then tp connect + tp intercept',
      async (notes) => {
        const st = JSON.parse((await this.tp(['status', '-o', 'json'])).stdout) as {
          daemon?: { pid: number };
        };
        if (!st.daemon) throw new Error('the user daemon is not running');
        // A request in the workstation's hands when the daemon dies (the laptop app answers it after 3 s).
        held = this.nodeRequest(`${this.url}slow`);
        await this.laptop.waitForOutput(/slow request/, 10_000);
        process.kill(st.daemon.pid, 'SIGKILL');
        await waitFor('the user daemon to die', () => !pidExists(st.daemon!.pid), 10_000, 50);
        const killedAt = Date.now();
        await this.tp(['connect', '-n', this.namespace]);
        const connected = Date.now();
        const r = await this.tp(
          ['intercept', WORKLOAD, '-n', this.namespace, '--port', `${LOCAL_PORT}:${ECHO_PORT}`],
          { check: false },
        );
        notes.push(
          r.code === 0
            ? `tp connect took ${((connected - killedAt) / 1000).toFixed(1)} s, tp intercept ${((Date.now() - connected) / 1000).toFixed(1)} s`
            : `tp intercept failed: ${r.stderr.trim()}`,
        );
        if (r.code !== 0)
          throw new Error(`tp intercept after the daemon was killed failed: ${r.stderr.trim()}`);
        return Date.now();
      },
    );
    const answer = held ? await held : 'not sent';
    result.heldRequest = answer.startsWith(`${WORKLOAD}-`)
      ? 'app'
      : answer === 'laptop'
        ? 'workstation'
        : answer;
    const note = `the request the workstation held when its daemon died: answered by the ${result.heldRequest}`;
    result.notes.push(note);
    this.say(`  ${note}`);
    return result;
  }

  /** One request from the lab node: the body, or "FAILED curl exit N". */
  private nodeRequest(url: string): Promise<string> {
    return new Promise((resolve) => {
      const child = spawn(
        process.execPath,
        [tpLabMain, 'exec', '--node', '--', 'curl', '-s', '-m', '10', url],
        {
          stdio: ['ignore', 'pipe', 'ignore'],
        },
      );
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      child.on('close', (code) => resolve(code === 0 ? out : `FAILED curl exit ${code}`));
    });
  }

  /**
   * The workstation's traffic to and from the API server dropped (iptables DROP in its namespace, no FIN)
   * for `seconds`; over when the rules are gone. Notes when the app answered after the drop began.
   */
  async apiServerDropped(seconds: number): Promise<FaultResult & { appAfterSeconds: number | undefined }> {
    let appAfter: number | undefined;
    const r = await this.measure(
      `workstation's traffic to the API server dropped for ${seconds} s`,
      async (notes) => {
        const ip = this.c.workstation.apiServer?.ip;
        if (!ip) throw new Error('the workstation has no API server route to drop');
        const began = Date.now();
        try {
          await this.iptables(['-I', 'OUTPUT', '-d', ip, '-j', 'DROP']);
          await this.iptables(['-I', 'INPUT', '-s', ip, '-j', 'DROP']);
          const app = await this.probe.first('app', began, seconds * 1000);
          appAfter = app === undefined ? undefined : (app - began) / 1000;
          notes.push(
            `the app answered ${appAfter === undefined ? 'never' : `${appAfter.toFixed(1)} s`} into the drop`,
          );
          await sleep(Math.max(0, began + seconds * 1000 - Date.now()));
        } finally {
          await this.removeIptablesRules();
        }
        return Date.now();
      },
    );
    return { ...r, appAfterSeconds: appAfter };
  }

  private async iptables(rule: string[]): Promise<void> {
    await onWorkstation(this.c, ['iptables', '-w', ...rule]);
    this.iptablesRules.push(rule);
  }

  private async removeIptablesRules(): Promise<void> {
    for (const rule of this.iptablesRules.splice(0).reverse())
      await onWorkstation(this.c, ['iptables', '-w', '-D', ...rule.slice(1)], { check: false });
  }

  /** `tp-lab restart kube-apiserver`; over when it returned (the whole lab ready). */
  apiServerRestarted(): Promise<FaultResult> {
    return this.measure(
      'tp-lab restart kube-apiserver',
      async (notes) => {
        const began = Date.now();
        const r = await runCommand([process.execPath, tpLabMain, 'restart', 'kube-apiserver'], {
          check: false,
          timeoutMs: 300_000,
        });
        notes.push(`the restart took ${((Date.now() - began) / 1000).toFixed(1)} s`);
        if (r.code !== 0) throw new Error(`tp-lab restart kube-apiserver failed: ${r.stderr.trim()}`);
        return Date.now();
      },
      60_000,
      // The lab whole afterwards: every request keeps being served for a while after the restart too.
      20_000,
    );
  }

  /** `tp leave`: whether it worked, and what the probe saw until the app answered (at most 30 s). */
  async leave(): Promise<{ left: string; appAnswers: boolean; seen: string[] }> {
    const from = Date.now();
    const r = await this.tp(['leave', WORKLOAD], { check: false });
    const app = await this.probe.first('app', from, 30_000);
    const seen = this.probe
      .between(from, Date.now())
      .map((s) => `${new Date(s.at).toISOString()} ${s.detail}`);
    return {
      left: r.code === 0 ? '' : r.stderr.trim() || `exit ${r.code}`,
      appAnswers: app !== undefined,
      seen,
    };
  }

  /**
   * Everything back as it was: probe, tp, the laptop app, rules, the namespace, the chart if it installed
   * it. The logs stay in the scratch directory for a look afterwards: the user daemon's (logs/), the
   * manager's and the agent's (kubectl logs, all containers of their pods, previous runs included).
   */
  async stop(): Promise<void> {
    this.probe?.stop();
    this.vifProbe?.stop();
    await this.removeIptablesRules().catch(() => {});
    for (const [name, ns, selector] of [
      ['manager', MANAGER_NS, MANAGER_SELECTOR],
      ['workload', this.namespace, `app=${WORKLOAD}`],
    ] as const) {
      const logs = await kubectl(
        this.c,
        ['logs', '-n', ns, '-l', selector, '--all-containers', '--timestamps', '--tail=-1'],
        { check: false },
      ).catch(() => undefined);
      if (logs) fs.writeFileSync(path.join(this.scratch, `${name}.log`), logs.stdout + logs.stderr);
    }
    await this.tp(['quit'], { check: false }).catch(() => {});
    await this.laptop?.stop();
    await kubectl(this.c, ['delete', 'namespace', this.namespace, '--wait=false'], { check: false }).catch(
      () => {},
    );
    if (this.installedChart)
      await this.tp(['helm', 'uninstall'], { check: false, timeoutMs: 180_000 }).catch(() => {});
    process.off('exit', this.onExit);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The per-fault table (markdown) the bench prints and the README shows. */
export function faultTable(results: FaultResult[]): string {
  const rows = results.map(
    (r) =>
      `| ${r.fault} | ${r.failed.length} of ${r.requests} | ${r.vifFailed.length} of ${r.vifRequests} (slowest ${r.vifSlowestSeconds.toFixed(1)} s) | ${r.backSeconds === undefined ? 'not back' : `${r.backSeconds.toFixed(1)} s`} | ${r.notes.join('; ')} |`,
  );
  return [
    '| fault | failed requests | failed through the VIF | intercept back after | notes |',
    '|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}
