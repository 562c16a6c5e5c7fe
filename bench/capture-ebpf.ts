// Bench of the eBPF capture mechanism: wrk from a client namespace to a Node app in a pod namespace, in
// three states measured in the same run, interleaved round by round:
//   direct          no program attached (the baseline)
//   ebpf idle       tp_steer attached, the port captured, no intercept: the kernel's lookup finds the app
//   ebpf steered    the port steered to a Node passthrough listener (the agent's hop, without the tunnel)
// Each in two modes: keep-alive (the sk_lookup program runs once per connection, so this shows the data path)
// and a new connection per request (the program runs for every request).
// The mark: ebpf idle within 5% of direct. Prints ratios to direct (median of the per-round ratios).
// Usage: node dist/bench/capture-ebpf.js [--seconds 5] [--rounds 5] [--connections 16] [--strict]
// For bench/capture.ts, ebpfCaptureMechanisms() gives the same two eBPF states as CaptureMechanisms.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { pathToFileURL } from 'node:url';
import { apply, cleanup, status } from '../bpf/mechanism.js';
import { closeFd, enableRunTimeStats, openPinned, programRunStats } from '../bpf/objects.js';
import { ensureBpffs } from '../testbed/bpffs.js';
import type { PodNetwork } from '../testbed/pod-network.js';
import { createPodTestbed, RESPONDER, STEERING_LISTENER, waitForLine } from '../testbed/pod-testbed.js';
import type { CaptureMechanism } from './capture.js';
import { benchFlags, median } from './rig.js';
import { runWrk, type WrkRun } from './wrk.js';

export type EbpfBenchCase = 'direct' | 'ebpf idle' | 'ebpf steered';
export type EbpfBenchMode = 'keep-alive' | 'connection per request';
const CASES: EbpfBenchCase[] = ['direct', 'ebpf idle', 'ebpf steered'];
const MODES: EbpfBenchMode[] = ['keep-alive', 'connection per request'];

export interface EbpfBenchOptions {
  seconds: number;
  rounds: number;
  connections: number;
  /** Printed as the bench goes; silent when absent. */
  progress?: (line: string) => void;
}

export interface EbpfBenchRow {
  mode: EbpfBenchMode;
  case: EbpfBenchCase;
  /** Median requests per second over the rounds. */
  requestsPerSecond: number;
  /** Median over the rounds of (this case / direct in the same round). */
  ratioToDirect: number;
  p50Micros: number;
  /** The program's own run time per connection (kernel BPF statistics), for the ebpf cases. */
  programNsPerRun?: number;
  programRuns?: number;
}

export interface EbpfBenchResult {
  rows: EbpfBenchRow[];
  /**
   * The mark, not intercepting within 5% of direct: by throughput per mode (as noisy as the machine), and
   * by the program's own time per connection against the CPU time per request at the direct rate.
   */
  idleWithin5Percent: Record<EbpfBenchMode | 'program cost', boolean>;
  /** The program's time per connection as a share of the CPU time per request at the direct rate. */
  programCostShare: number;
}

const APP_PORT = 8080;

export async function runEbpfCaptureBench(o: EbpfBenchOptions): Promise<EbpfBenchResult> {
  const say = o.progress ?? (() => {});
  const prefix = `tpe-b${process.pid % 10000}`;
  const pinRoot = `/sys/fs/bpf/${prefix}`;
  const bpffs = ensureBpffs();
  const bed = createPodTestbed(prefix, '10.253.0');
  const netnsPath = bed.podNetnsPath;
  const teardown = () => {
    try {
      cleanup({ netnsPath, pinRoot });
    } catch {
      // the namespace goes next, which detaches the link anyway
    }
    bed.destroy();
    fs.rmSync(pinRoot, { recursive: true, force: true });
    bpffs.release();
  };
  const onSignal = () => {
    teardown();
    process.exit(130);
  };
  process.once('exit', teardown);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // One client opening thousands of connections a second runs out of ports within the 60 s a closed
    // connection stays in TIME_WAIT, and the rate collapses for every case; real clusters spread clients
    // over many addresses. So: no TIME_WAIT in the bench's two namespaces, for every case alike.
    for (const ns of [bed.podNetns, bed.clientNetns]) {
      execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'sysctl', '-qw', 'net.ipv4.tcp_max_tw_buckets=0']);
    }
    const app = bed.spawnInPod(process.execPath, [RESPONDER, 'app', String(APP_PORT)]);
    await waitForLine(app, /^ready/);
    apply({ ports: [APP_PORT], netnsPath, pinRoot });
    const agent = bed.spawnInPod(process.execPath, [STEERING_LISTENER, pinRoot, '', 'passthrough']);
    await waitForLine(agent, /^ready/);
    cleanup({ netnsPath, pinRoot });

    const steer = async (ports: string) => {
      agent.stdin!.write(`steer ${ports}\n`);
      const line = await waitForLine(agent, /^(steering|error)/);
      if (line.startsWith('error')) throw new Error(line);
    };
    const enter = async (c: EbpfBenchCase) => {
      // Like the agent when an intercept ends: out of the map before the maps go.
      await steer('');
      if (c === 'direct') {
        cleanup({ netnsPath, pinRoot });
        return;
      }
      apply({ ports: [APP_PORT], netnsPath, pinRoot });
      if (c === 'ebpf steered') await steer(String(APP_PORT));
    };

    // The kernel times each run of tp_steer meanwhile: the mechanism's own cost, free of the machine's noise.
    const stats = enableRunTimeStats();
    const programCounters = () => {
      const fd = openPinned(`${status({ netnsPath, pinRoot }).pinDir}/prog`);
      if (fd === undefined) return { runTimeNs: 0n, runCount: 0n };
      try {
        return programRunStats(fd);
      } finally {
        closeFd(fd);
      }
    };
    const programTime = new Map<string, { ns: bigint; runs: bigint }>();

    const url = `http://${bed.podIp}:${APP_PORT}/`;
    const runs = new Map<string, WrkRun[]>();
    for (let round = 0; round < o.rounds; round++) {
      // Rotate the order so that drift on a shared machine does not favour one case.
      const order = CASES.map((_, i) => CASES[(i + round) % CASES.length]!);
      for (const mode of MODES) {
        for (const c of order) {
          await enter(c);
          const before = programCounters();
          const r = await wrk(bed.clientNetns, url, o, mode);
          const after = programCounters();
          const key = `${mode}|${c}`;
          runs.set(key, [...(runs.get(key) ?? []), r]);
          const t = programTime.get(key) ?? { ns: 0n, runs: 0n };
          programTime.set(key, {
            ns: t.ns + after.runTimeNs - before.runTimeNs,
            runs: t.runs + after.runCount - before.runCount,
          });
          say(
            `round ${round + 1}/${o.rounds} ${mode.padEnd(22)} ${c.padEnd(12)} ${r.requestsPerSecond.toFixed(0)} req/s`,
          );
        }
      }
    }
    stats.close();
    agent.kill('SIGKILL');
    app.kill('SIGKILL');

    const rows: EbpfBenchRow[] = [];
    for (const mode of MODES) {
      const direct = runs.get(`${mode}|direct`)!;
      for (const c of CASES) {
        const these = runs.get(`${mode}|${c}`)!;
        const t = programTime.get(`${mode}|${c}`)!;
        rows.push({
          ...(t.runs > 0n ? { programNsPerRun: Number(t.ns / t.runs), programRuns: Number(t.runs) } : {}),
          mode,
          case: c,
          requestsPerSecond: median(these.map((r) => r.requestsPerSecond)),
          ratioToDirect: median(these.map((r, i) => r.requestsPerSecond / direct[i]!.requestsPerSecond)),
          p50Micros: median(these.map((r) => r.p50Micros)),
        });
      }
    }
    const idle = (mode: EbpfBenchMode) => rows.find((r) => r.mode === mode && r.case === 'ebpf idle')!;
    const direct = rows.find((r) => r.mode === 'connection per request' && r.case === 'direct')!;
    const cpuNsPerRequest = (os.cpus().length * 1e9) / direct.requestsPerSecond;
    const programCostShare = (idle('connection per request').programNsPerRun ?? 0) / cpuNsPerRequest;
    return {
      rows,
      programCostShare,
      idleWithin5Percent: {
        'keep-alive': idle('keep-alive').ratioToDirect >= 0.95,
        'connection per request': idle('connection per request').ratioToDirect >= 0.95,
        'program cost': programCostShare <= 0.05,
      },
    };
  } finally {
    process.off('exit', teardown);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    teardown();
  }
}

function wrk(netns: string, url: string, o: EbpfBenchOptions, mode: EbpfBenchMode): Promise<WrkRun> {
  return runWrk({
    url,
    threads: 2,
    connections: o.connections,
    seconds: o.seconds,
    newConnectionPerRequest: mode === 'connection per request',
    netns,
  });
}

/** The app ports bench/capture.ts's app must also listen on for ebpfCaptureMechanisms(). */
export const EBPF_BENCH_PORTS = { idle: 8091, steered: 8092 } as const;

/**
 * 'ebpf idle' and 'ebpf steered' as mechanisms of bench/capture.ts, in place side by side with the others:
 * tp_steer captures EBPF_BENCH_PORTS (so it also runs, and passes, for the other mechanisms' connections),
 * and a passthrough listener is steered EBPF_BENCH_PORTS.steered. Processes that use bpffs are started with
 * nsenter: `ip netns exec` remounts /sys and hides /sys/fs/bpf.
 */
export function ebpfCaptureMechanisms(): CaptureMechanism[] {
  const pinRoot = `/sys/fs/bpf/tpe-cb${process.pid % 10000}`;
  const ports = [EBPF_BENCH_PORTS.idle, EBPF_BENCH_PORTS.steered];
  let users = 0;
  let bpffs: ReturnType<typeof ensureBpffs> | undefined;
  let listener: ChildProcess | undefined;
  const netnsPath = (net: PodNetwork) => `/run/netns/${net.pod}`;
  const attach = (net: PodNetwork) => {
    if (users++ === 0) bpffs = ensureBpffs();
    apply({ ports, netnsPath: netnsPath(net), pinRoot });
  };
  const detach = (net: PodNetwork) => {
    if (--users > 0) return;
    cleanup({ netnsPath: netnsPath(net), pinRoot });
    fs.rmSync(pinRoot, { recursive: true, force: true });
    bpffs?.release();
  };
  return [
    {
      name: 'ebpf idle',
      start: async (net) => {
        attach(net);
        return { host: net.podIp, port: EBPF_BENCH_PORTS.idle };
      },
      stop: async (net) => detach(net),
    },
    {
      name: 'ebpf steered',
      start: async (net) => {
        attach(net);
        const argv = [`--net=${netnsPath(net)}`, 'setpriv', '--pdeathsig', 'KILL', process.execPath];
        argv.push(STEERING_LISTENER, pinRoot, String(EBPF_BENCH_PORTS.steered), 'passthrough');
        listener = spawn('nsenter', argv, { stdio: ['pipe', 'pipe', 'inherit'] });
        const line = await waitForLine(listener, /^(ready|error)/);
        if (!line.startsWith('ready')) throw new Error(`the passthrough listener: ${line}`);
        return { host: net.podIp, port: EBPF_BENCH_PORTS.steered };
      },
      stop: async (net) => {
        if (listener && listener.exitCode === null) {
          const exited = new Promise((r) => listener!.once('exit', r));
          listener.kill('SIGKILL');
          await exited;
        }
        detach(net);
      },
    },
  ];
}

export function formatEbpfBench(r: EbpfBenchResult): string {
  const lines = [
    'mode                    case          req/s     ratio to direct  p50        tp_steer per run',
  ];
  for (const row of r.rows) {
    const prog =
      row.programNsPerRun === undefined ? '' : `${row.programNsPerRun} ns (${row.programRuns} runs)`;
    lines.push(
      `${row.mode.padEnd(23)} ${row.case.padEnd(13)} ${row.requestsPerSecond.toFixed(0).padStart(8)}  ${row.ratioToDirect.toFixed(3).padStart(15)}  ${`${row.p50Micros.toFixed(0)} µs`.padEnd(10)} ${prog}`,
    );
  }
  const idle = r.rows.find((x) => x.mode === 'connection per request' && x.case === 'ebpf idle')!;
  lines.push(
    `tp_steer not steering: ${idle.programNsPerRun} ns per connection = ${(100 * r.programCostShare).toFixed(3)}% of the CPU time per request at the direct rate`,
  );
  for (const [mode, ok] of Object.entries(r.idleWithin5Percent)) {
    const by = mode === 'program cost' ? 'program cost' : `throughput, ${mode}`;
    lines.push(`mark (${by}): ebpf idle within 5% of direct: ${ok ? 'MET' : 'MISSED'}`);
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const { strict, ...sizes } = benchFlags({ seconds: 5, rounds: 5, connections: 16 }, ['strict']);
  const result = await runEbpfCaptureBench({
    ...sizes,
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(formatEbpfBench(result));
  if (strict && !Object.values(result.idleWithin5Percent).every(Boolean)) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: Error) => {
    process.stderr.write(`capture-ebpf bench: ${e.message}\n`);
    process.exitCode = 1;
  });
}
