// Round trips through the path users take: `tp connect` with nothing but a kubeconfig, so every byte
// between the workstation and the cluster rides the Kubernetes API server's port-forward. On the lab,
// each path through tp beside `kubectl port-forward` alone to the same pod, in the same run (interleaved
// rounds, medians):
//   intercept  wrk in the cluster (the node's namespace) -> the intercepted pod -> agent -> manager ->
//              port-forward -> user daemon -> the workstation's app; anchor: port-forward to that pod
//   VIF        wrk on the workstation -> a pod's IP -> VIF -> root daemon -> port-forward -> manager ->
//              the pod; anchor: port-forward to that pod
// For each: one connection with sequential requests (wrk -t1 -c1: req/s, p50, p99), a new connection per
// request (p50, p99), 50 connections at once (wrk -t2 -c50), 100 MiB each way (curl); and sequential
// requests through the VIF while a 2 GiB download runs beside them (head-of-line). Every server is the same small Node HTTP server (the pods'
// and the workstation's). Prints the figures, CPU per request and per MiB of each process on the path, and
// each mark.
//
//   node dist/bench/round-trip.js [--rounds 3] [--seconds 5] [--mib 100] [--hol-mib 2048] [--strict]
//
// Holds the lab's lock for the whole run; brings the lab up when it is down (and takes it down again),
// installs the chart when it is missing (and uninstalls it again). Root, wrk and curl on the host.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCommand } from '../lab/command.js';
import { labPaths, pidFile } from '../lab/paths.js';
import { liveProcess } from '../lab/processes.js';
import { type Cluster, describeCluster, externalKubeconfig, repoRoot } from '../test/e2e/cluster.js';
import {
  apply,
  type Background,
  ensureChart,
  freshNamespace,
  kubectl,
  listPods,
  MANAGER_NS,
  rolloutStatus,
  startOnWorkstation,
  tpOnWorkstation,
  waitFor,
} from '../test/e2e/kube.js';
import { beginE2eRun, endE2eRun } from '../test/e2e/session.js';
import { deployment } from '../test/e2e/workloads.js';
import { benchFlags, cpuSeconds, median, treeCpuSeconds } from './rig.js';
import {
  PARALLEL_CONNECTIONS,
  type PathFigures,
  type RoundTripFigures,
  renderFigures,
  renderMarks,
  roundTripMarks,
  type Sequential,
} from './round-trip-marks.js';
import { parseWrk, requireWrk, type WrkRun } from './wrk.js';

const NS = 'tp-bench-round-trip';
const PORT = 8080;
/** The workstation's app (the intercept's target) and the port-forwards' local ports, in tplab-ws. */
const LOCAL_PORT = 18190;
const FORWARD_PORT = { intercepted: 19190, direct: 19191 } as const;
const SCRATCH = '/tmp/tp-bench-round-trip';
const MiB = 1 << 20;

/**
 * The HTTP server every path ends at (pods and workstation alike): GET / answers a few bytes; GET
 * /bytes?n=N sends N bytes; any request to /sink answers how many bytes its body had.
 */
const server = `
const http = require('node:http');
const chunk = Buffer.alloc(1 << 16, 120);
http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/bytes') {
    let left = Number(url.searchParams.get('n'));
    res.writeHead(200, { 'content-length': left });
    const more = () => {
      while (left > 0) {
        const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= part.length;
        if (!res.write(part)) return res.once('drain', more);
      }
      res.end();
    };
    return more();
  }
  if (url.pathname === '/sink') {
    let n = 0;
    req.on('data', (d) => { n += d.length; });
    req.on('end', () => res.end(String(n)));
    return;
  }
  res.end(process.env.TEXT);
}).listen(Number(process.env.PORT), () => console.log('listening'));
`;

function serverDeployment(c: Cluster, name: string): object {
  const labels = { app: name };
  return deployment(name, labels, {
    terminationGracePeriodSeconds: 2,
    containers: [
      {
        name: 'server',
        image: c.images.shell,
        command: ['node', '-e', server],
        env: [
          { name: 'PORT', value: String(PORT) },
          { name: 'TEXT', value: name },
        ],
        ports: [{ name: 'http', containerPort: PORT }],
        readinessProbe: { httpGet: { path: '/', port: PORT }, periodSeconds: 2 },
      },
    ],
  });
}

/** A command in the cluster: the lab node's network namespace, which reaches every pod IP. */
function inCluster(argv: string[]): string[] {
  return [process.execPath, path.join(repoRoot, 'dist', 'lab', 'main.js'), 'exec', '--node', '--', ...argv];
}

async function run(argv: string[], timeoutMs: number): Promise<string> {
  const r = await runCommand(argv, { check: false, timeoutMs });
  if (r.code !== 0)
    throw new Error(`${argv.slice(-6).join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Where each measurement runs: the cluster side or the workstation. */
type Side = 'cluster' | 'workstation';

function on(c: Cluster, side: Side, argv: string[]): string[] {
  return side === 'cluster' ? inCluster(argv) : [...c.workstationPrefix, ...argv];
}

async function wrk(
  c: Cluster,
  side: Side,
  url: string,
  seconds: number,
  close = false,
  connections = 1,
): Promise<WrkRun> {
  const argv = [
    'wrk',
    `-t${Math.min(connections, 2)}`,
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    ...(close ? ['-H', 'Connection: close'] : []),
  ];
  const r = parseWrk(await run(on(c, side, [...argv, url]), (seconds + 30) * 1000));
  if (r.errors > 0) throw new Error(`wrk against ${url} saw errors: ${r.errorReport}`);
  return r;
}

const sequential = (r: WrkRun): Sequential => ({
  rps: r.requestsPerSecond,
  p50Ms: r.p50Micros / 1000,
  p99Ms: r.p99Micros / 1000,
});

/** GET n bytes; MiB/s. */
async function download(c: Cluster, side: Side, base: string, n: number): Promise<number> {
  const out = await run(
    on(c, side, [
      'curl',
      '-sS',
      '-o',
      '/dev/null',
      '--max-time',
      '600',
      '-w',
      '%{size_download} %{speed_download}',
      `${base}/bytes?n=${n}`,
    ]),
    620_000,
  );
  const [size, speed] = out.trim().split(' ').map(Number);
  if (size !== n) throw new Error(`download from ${base}: ${size} of ${n} bytes`);
  return speed! / MiB;
}

/** PUT the file (its size is n) to /sink; MiB/s. The server's answer is the byte count it saw. */
async function upload(c: Cluster, side: Side, base: string, file: string, n: number): Promise<number> {
  const out = await run(
    on(c, side, ['curl', '-sS', '--max-time', '600', '-T', file, '-w', ' %{speed_upload}', `${base}/sink`]),
    620_000,
  );
  const [seen, speed] = out.trim().split(' ').map(Number);
  if (seen !== n) throw new Error(`upload to ${base}: the server saw ${seen} of ${n} bytes`);
  return speed! / MiB;
}

/** CPU seconds so far of the processes on the paths: the lab's, the pods' (cgroup) and tp's. */
type CpuProbe = () => Map<string, number>;

function podCpuSeconds(uid: string): number | undefined {
  // cgroup v1 (cpuacct, nanoseconds) or v2 (cpu.stat usage_usec), under the kubelet's /tplab root.
  for (const [root, read] of [
    [
      '/sys/fs/cgroup/cpuacct/tplab/kubepods',
      (d: string) => Number(fs.readFileSync(`${d}/cpuacct.usage`, 'utf8')) / 1e9,
    ],
    [
      '/sys/fs/cgroup/tplab/kubepods',
      (d: string) => Number(/usage_usec (\d+)/.exec(fs.readFileSync(`${d}/cpu.stat`, 'utf8'))?.[1]) / 1e6,
    ],
  ] as const) {
    const name = `pod${uid}`;
    for (const qos of ['', 'burstable', 'besteffort']) {
      const dir = path.join(root, qos, name);
      if (fs.existsSync(dir)) return read(dir);
    }
  }
  return undefined;
}

/**
 * `pids`: processes by name (a negative pid: that process and its descendants, for commands started
 * through `tp-lab exec`); `pods`: pod UIDs by name, read from their cgroups.
 */
function cpuProbe(pids: Record<string, number | undefined>, pods: Record<string, string>): CpuProbe {
  return () => {
    const out = new Map<string, number>();
    for (const [name, pid] of Object.entries(pids)) {
      if (!pid) continue;
      try {
        out.set(name, pid < 0 ? treeCpuSeconds(-pid) : cpuSeconds(pid));
      } catch {
        // gone
      }
    }
    for (const [name, uid] of Object.entries(pods)) {
      const s = podCpuSeconds(uid);
      if (s !== undefined) out.set(name, s);
    }
    return out;
  };
}

/** Microseconds of CPU per request, by process, between two probes. */
function perRequest(before: Map<string, number>, after: Map<string, number>, requests: number) {
  const out: [string, number][] = [];
  for (const [name, b] of before) {
    const a = after.get(name);
    if (a !== undefined && a > b) out.push([name, ((a - b) * 1e6) / requests]);
  }
  return out.sort((x, y) => y[1] - x[1]);
}

async function main(): Promise<void> {
  const flags = benchFlags({ rounds: 3, seconds: 5, mib: 100, 'hol-mib': 2048 }, ['strict']);
  if (externalKubeconfig())
    throw new Error(
      'bench/round-trip runs on the lab only (its cluster-side client is the lab node): unset TP_E2E_KUBECONFIG',
    );
  requireWrk();
  const labRun = await beginE2eRun();
  if (labRun.state !== 'up') {
    await endE2eRun(labRun);
    throw new Error(`the lab is not available: ${labRun.state}`);
  }
  const c = describeCluster();
  fs.rmSync(SCRATCH, { recursive: true, force: true });
  fs.mkdirSync(SCRATCH, { recursive: true });
  const tp = tpOnWorkstation(c, SCRATCH, {
    TP_ROOT_DAEMON_SOCKET: `${SCRATCH}/root.socket`,
    TP_ROOT_DAEMON_STATE_DIR: `${SCRATCH}/root-state`,
  });
  const background: Background[] = [];
  let installedChart = false;
  try {
    const say = (line: string) => process.stderr.write(`round-trip: ${line}\n`);
    say(`setting up namespace ${NS}`);
    await freshNamespace(c, NS);
    await apply(c, [serverDeployment(c, 'rt-intercepted'), serverDeployment(c, 'rt-direct')], NS);
    installedChart = await ensureChart(c, tp);
    await rolloutStatus(c, NS, 'rt-direct');
    const laptop = startOnWorkstation(c, [
      'env',
      `PORT=${LOCAL_PORT}`,
      'TEXT=laptop',
      process.execPath,
      '-e',
      server,
    ]);
    background.push(laptop);
    await laptop.waitForOutput(/listening/);
    say('tp connect (through the API server), tp intercept rt-intercepted');
    await tp(['connect', '-n', NS]);
    await tp(['intercept', 'rt-intercepted', '-n', NS, '--port', `${LOCAL_PORT}:${PORT}`]);
    await rolloutStatus(c, NS, 'rt-intercepted');
    const podOf = async (app: string) => {
      const pods = await waitFor(`a ready ${app} pod`, async () => {
        const ready = (await listPods(c, NS, `app=${app}`)).filter((p) => p.ready && !p.deleting);
        return ready.length === 1 ? ready : null;
      });
      return pods[0]!;
    };
    const intercepted = await podOf('rt-intercepted');
    const direct = await podOf('rt-direct');
    const url = {
      intercept: `http://${intercepted.ip}:${PORT}`,
      vif: `http://${direct.ip}:${PORT}`,
      interceptAnchor: `http://127.0.0.1:${FORWARD_PORT.intercepted}`,
      vifAnchor: `http://127.0.0.1:${FORWARD_PORT.direct}`,
    };
    const forward = async (pod: string, port: number) => {
      const pf = startOnWorkstation(c, [
        c.kubectl,
        'port-forward',
        '-n',
        NS,
        `pod/${pod}`,
        `${port}:${PORT}`,
      ]);
      background.push(pf);
      await pf.waitForOutput(/Forwarding from 127\.0\.0\.1/);
      return pf;
    };
    const forwards = {
      intercepted: await forward(intercepted.name, FORWARD_PORT.intercepted),
      direct: await forward(direct.name, FORWARD_PORT.direct),
    };
    const side = {
      intercept: 'cluster',
      vif: 'workstation',
      interceptAnchor: 'workstation',
      vifAnchor: 'workstation',
    } as const;
    type Path = keyof typeof url;
    const paths: Path[] = ['interceptAnchor', 'intercept', 'vifAnchor', 'vif'];
    // Each path answers as it should: the intercept from the workstation, the rest from their pods.
    const expected: Record<Path, string> = {
      intercept: 'laptop',
      vif: 'rt-direct',
      interceptAnchor: 'rt-intercepted',
      vifAnchor: 'rt-direct',
    };
    for (const p of paths) {
      await waitFor(
        `${p} (${url[p]}) to answer "${expected[p]}"`,
        async () => (await body(c, side[p], url[p])) === expected[p],
      );
    }

    const n = flags.mib * MiB;
    const file = path.join(SCRATCH, 'upload.bin');
    fs.writeFileSync(file, Buffer.alloc(n, 120));
    const status = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as { daemon: { pid: number } };
    const rootDaemon = JSON.parse(fs.readFileSync(`${SCRATCH}/root-state/root-daemon.json`, 'utf8')) as {
      pid: number;
    };
    const lab = labPaths();
    const labPid = (name: string) => liveProcess(pidFile(lab, name))?.pid;
    const managerPod = (await listPods(c, MANAGER_NS, 'app.kubernetes.io/name=traffic-manager')).find(
      (p) => p.ready && !p.deleting,
    );
    const uidOf = async (ns: string, pod: string) =>
      (await kubectl(c, ['get', 'pod', '-n', ns, pod, '-o', 'jsonpath={.metadata.uid}'])).stdout.trim();
    const probe = cpuProbe(
      {
        'user daemon': status.daemon.pid,
        'root daemon': rootDaemon.pid,
        'kube-apiserver': labPid('kube-apiserver'),
        kubelet: labPid('kubelet'),
        containerd: labPid('containerd'),
        'workstation app': -laptop.child.pid!,
        'kubectl port-forward (intercepted pod)': -forwards.intercepted.child.pid!,
        'kubectl port-forward (direct pod)': -forwards.direct.child.pid!,
      },
      {
        'manager pod': managerPod ? await uidOf(MANAGER_NS, managerPod.name) : '',
        'intercepted pod (agent)': await uidOf(NS, intercepted.name),
        'direct pod': await uidOf(NS, direct.name),
      },
    );

    // Warm up every path (JIT, connections), then interleave the rounds so noise hits all alike.
    say('warming up');
    for (const p of paths) await wrk(c, side[p], `${url[p]}/`, 2);
    const runs: Record<
      Path,
      {
        keepAlive: WrkRun[];
        newConnection: WrkRun[];
        parallel: WrkRun[];
        toWs: number[];
        toCluster: number[];
      }
    > = Object.fromEntries(
      paths.map((p) => [p, { keepAlive: [], newConnection: [], parallel: [], toWs: [], toCluster: [] }]),
    ) as never;
    const hol = { idle: [] as number[], loaded: [] as number[], download: [] as number[] };
    const cpu: Record<string, [string, number][]> = {};
    /** CPU per MiB of the bulk transfers, by path and direction (last round). */
    const bulkCpu: [string, [string, number][]][] = [];
    for (let round = 0; round < flags.rounds; round++) {
      for (const p of paths) {
        const before = probe();
        const r = await wrk(c, side[p], `${url[p]}/`, flags.seconds);
        const requests = r.requestsPerSecond * flags.seconds;
        if (round === flags.rounds - 1) cpu[p] = perRequest(before, probe(), requests);
        runs[p].keepAlive.push(r);
        runs[p].newConnection.push(await wrk(c, side[p], `${url[p]}/`, flags.seconds, true));
        runs[p].parallel.push(
          await wrk(c, side[p], `${url[p]}/`, flags.seconds, false, PARALLEL_CONNECTIONS),
        );
        // The intercept's client is in the cluster: its downloads cross to the cluster, its uploads to the workstation.
        const b0 = probe();
        const down = await download(c, side[p], url[p], n);
        const b1 = probe();
        const up = await upload(c, side[p], url[p], file, n);
        if (round === flags.rounds - 1) {
          const b2 = probe();
          const [downTo, upTo] =
            side[p] === 'cluster' ? ['cluster', 'workstation'] : ['workstation', 'cluster'];
          bulkCpu.push([`${p} to the ${downTo}`, perRequest(b0, b1, flags.mib)]);
          bulkCpu.push([`${p} to the ${upTo}`, perRequest(b1, b2, flags.mib)]);
        }
        if (side[p] === 'cluster') {
          runs[p].toCluster.push(down);
          runs[p].toWs.push(up);
        } else {
          runs[p].toWs.push(down);
          runs[p].toCluster.push(up);
        }
      }
      // Head-of-line: sequential requests through the VIF while a download fills the same tunnel.
      const big = flags['hol-mib'] * MiB;
      const started = Date.now();
      let downloading = true;
      const loading = download(c, 'workstation', url.vif, big).finally(() => {
        downloading = false;
      });
      await new Promise((r) => setTimeout(r, 1_000));
      const loaded = await wrk(c, 'workstation', `${url.vif}/`, flags.seconds);
      const stillLoading = downloading;
      const rate = await loading;
      if (!stillLoading)
        say(
          `the ${flags['hol-mib']} MiB download ended (after ${((Date.now() - started) / 1000).toFixed(1)} s) before the requests did: pass a larger --hol-mib`,
        );
      hol.loaded.push(loaded.p99Micros / 1000);
      hol.download.push(rate);
      hol.idle.push(runs.vif.keepAlive[round]!.p99Micros / 1000);
      say(
        `round ${round + 1}: one connection req/s ${paths.map((p) => `${p} ${runs[p].keepAlive[round]!.requestsPerSecond.toFixed(0)}`).join(', ')}; ` +
          `VIF p99 idle ${hol.idle[round]!.toFixed(2)} ms, during a download ${hol.loaded[round]!.toFixed(2)} ms`,
      );
    }

    const figures = (p: Path): PathFigures => {
      const seqMedian = (xs: WrkRun[]): Sequential => {
        const s = xs.map(sequential);
        return {
          rps: median(s.map((x) => x.rps)),
          p50Ms: median(s.map((x) => x.p50Ms)),
          p99Ms: median(s.map((x) => x.p99Ms)),
        };
      };
      return {
        keepAlive: seqMedian(runs[p].keepAlive),
        newConnection: seqMedian(runs[p].newConnection),
        parallel: seqMedian(runs[p].parallel),
        toWorkstationMiBs: median(runs[p].toWs),
        toClusterMiBs: median(runs[p].toCluster),
      };
    };
    const f: RoundTripFigures = {
      intercept: figures('intercept'),
      interceptAnchor: figures('interceptAnchor'),
      vif: figures('vif'),
      vifAnchor: figures('vifAnchor'),
      headOfLine: {
        idleP99Ms: median(hol.idle),
        loadedP99Ms: median(hol.loaded),
        downloadMiBs: median(hol.download),
      },
    };
    const marks = roundTripMarks(f);
    process.stdout.write(
      [
        `bench/round-trip on the lab, ${new Date().toISOString().slice(0, 10)}: medians of ${flags.rounds} rounds; wrk ${flags.seconds} s; ${flags.mib} MiB each way; a ${flags['hol-mib']} MiB download beside the VIF's requests`,
        ...renderFigures(f),
        'CPU per request, one connection (last round; µs):',
        ...paths.map(
          (p) =>
            `  ${p.padEnd(16)} ${cpu[p]!.filter(([, us]) => us >= 5)
              .map(([name, us]) => `${name.trim()} ${us.toFixed(0)}`)
              .join(', ')}`,
        ),
        'CPU per MiB, bulk (last round; µs):',
        ...bulkCpu.map(
          ([what, byProcess]) =>
            `  ${what.padEnd(30)} ${byProcess
              .filter(([, us]) => us >= 50)
              .map(([name, us]) => `${name.trim()} ${us.toFixed(0)}`)
              .join(', ')}`,
        ),
        'marks:',
        ...renderMarks(marks),
        '',
      ].join('\n'),
    );
    await tp(['leave', 'rt-intercepted'], { check: false });
    if (flags.strict && marks.some((m) => !m.met)) process.exitCode = 1;
  } finally {
    await tp(['quit'], { check: false }).catch(() => {});
    for (const b of background) await b.stop();
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
    if (installedChart) await tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    fs.rmSync(SCRATCH, { recursive: true, force: true });
    await endE2eRun(labRun);
  }
}

/** The body of GET url/ from a side (curl, short timeout), or '' when it fails. */
async function body(c: Cluster, side: Side, url: string): Promise<string> {
  const r = await runCommand(on(c, side, ['curl', '-sS', '--max-time', '5', `${url}/`]), {
    check: false,
    timeoutMs: 20_000,
  });
  return r.code === 0 ? r.stdout.trim() : '';
}

main().catch((e: Error) => {
  process.stderr.write(`bench/round-trip: ${e.message}\n`);
  process.exit(1);
});
