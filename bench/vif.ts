// VIF throughput: from the workstation namespace to a pod through the VIF and the tunnel (TUN -> system
// stack -> gRPC tunnel -> traffic manager -> pod), against a direct veth route to the same pod, in the same
// run (interleaved rounds, medians). Prints MB/s (bulk HTTP download) and keep-alive requests/s (wrk), and
// the ratios. First mark: bulk through the VIF at least a third of direct; goal: half. A third path, the
// tunnel alone (a local forwarder that originates tunnel streams, no VIF), shows which part costs what.
// Two more are the reference for the relays: two HAProxy relays in series on the VIF's hops (one on the
// workstation's loopback, one in the manager's namespace, to the pod), with the kernel's splice(2) and
// without (bench/haproxy.ts): what a relay written for the job reaches where tp's root daemon and manager
// relay, without the TUN.
//
//   node dist/bench/vif.js [--mib 300] [--rounds 3] [--seconds 5] [--connections 16] [--mtu 65000]
//                          [--manager-parallel-gc]
//
// The manager runs with the Node flags of tp's image (manager/node-flags.ts); --manager-parallel-gc runs
// it without them (V8's GC helper threads, as before 2026-12-04), to compare. The two relays' CPU, the
// manager's and the root daemon's, is printed beside the figures: per GB of the VIF's bulk rounds and per
// request of its keep-alive rounds (steadier than the rates on a shared machine).
//
// Uses the netns topology of the root daemon's tests (namespaces tpv-ws, tpv-cl, tpv-pod); needs root,
// curl and wrk. Everything it creates is removed at the end.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { waitFor } from '../command/wait.js';
import {
  connectRootDaemon,
  type RootDaemonHandle,
  startRootDaemon,
  stopRootDaemon,
} from '../daemons/root/launch.js';
import { MANAGER_NODE_FLAGS } from '../manager/node-flags.js';
import {
  ADDR,
  DIST,
  MANAGER_PORT,
  NetnsLab,
  NS,
  POD_SUBNET,
  SERVICE_SUBNET,
} from '../testbed/netns-topology.js';
import { haproxyConfig } from './haproxy.js';
import { benchFlags, cpuSeconds, median } from './rig.js';
import { runWrk } from './wrk.js';

/** The two HAProxy relays of each kind: the workstation's port on its loopback, the next one's port. */
const RELAY_PORTS = { splice: [18081, 18082], copy: [18083, 18084] } as const;

/** Starts the reference relays (bench/haproxy.ts); lab.down() ends them. Resolves once each answers. */
async function startRelays(lab: NetnsLab): Promise<void> {
  for (const [kind, [front, next]] of Object.entries(RELAY_PORTS)) {
    const splice = kind === 'splice';
    const relays = [
      { ns: NS.cl, bind: `${ADDR.manager}:${next}`, server: `${ADDR.pod}:80` },
      { ns: NS.ws, bind: `127.0.0.1:${front}`, server: `${ADDR.manager}:${next}` },
    ];
    for (const { ns, bind, server } of relays) {
      const config = path.join(lab.tmp, `haproxy-${kind}-${ns}.cfg`);
      fs.writeFileSync(config, haproxyConfig({ bind, server, splice }));
      const proc = lab.spawnIn(ns, ['haproxy', '-db', '-f', config]);
      proc.on('exit', (code) => {
        if (code) process.stderr.write(`bench/vif: haproxy (${bind}) exited ${code}\n`);
      });
    }
    await waitFor(
      `the HAProxy relays on ports ${front} and ${next} to answer`,
      async () =>
        (await lab.exec(NS.ws, ['curl', '-sS', '--max-time', '2', `http://127.0.0.1:${front}/`])).code === 0,
      30_000,
    );
  }
}

async function main(): Promise<void> {
  const flags = benchFlags({ mib: 300, rounds: 3, seconds: 5, connections: 16, mtu: 65_000 }, [
    'manager-parallel-gc',
  ]);
  const { mib, rounds, seconds, connections, mtu } = flags;
  const managerFlags = flags['manager-parallel-gc'] ? [] : [...MANAGER_NODE_FLAGS];
  const lab = new NetnsLab();
  let daemon: RootDaemonHandle | undefined;
  const socketPath = path.join(lab.tmp, 'root-daemon.socket');
  try {
    await lab.up();
    const pod = lab.node(NS.pod, 'daemons/root/test/pod-server.js', ['--http', '80', '--udp', '5353']);
    await lab.waitForLine(pod, /ready/);
    const manager = lab.spawnIn(NS.cl, [
      process.execPath,
      ...managerFlags,
      path.join(DIST, 'manager/main.js'),
      '--standalone',
      '--listen',
      `${ADDR.manager}:${MANAGER_PORT}`,
      '--log-level',
      'warn',
    ]);
    const keeper = lab.node(NS.ws, 'daemons/root/test/session-keeper.js', [
      `${ADDR.manager}:${MANAGER_PORT}`,
    ]);
    const sessionId = (await lab.waitForLine(keeper, /session (\S+)/))[1]!;
    daemon = await startRootDaemon({
      socketPath,
      stateDir: path.join(lab.tmp, 'state'),
      logDir: path.join(lab.tmp, 'logs'),
      wrap: ['ip', 'netns', 'exec', NS.ws],
      extraArgs: ['--dns-mode', 'resolv.conf', '--mtu', String(mtu), '--log-level', 'warn'],
    });
    lab.track(daemon.pid);
    await connectRootDaemon(daemon.client, {
      managerAddress: `${ADDR.manager}:${MANAGER_PORT}`,
      sessionId,
      namespace: 'default',
      cluster: {
        podSubnets: [POD_SUBNET],
        serviceSubnets: [SERVICE_SUBNET],
        clusterDomain: 'cluster.local',
        dnsIps: [],
        managerPodIp: ADDR.manager,
        managedNamespaces: [],
        flowConnections: true,
        flowWindows: true,
      },
    });

    // The tunnel alone (no VIF): tells the VIF's share of the cost from the tunnel's.
    const forwarder = lab.node(NS.ws, 'daemons/root/test/tunnel-forwarder.js', [
      `${ADDR.manager}:${MANAGER_PORT}`,
      sessionId,
      '18080',
      ADDR.pod,
      '80',
    ]);
    await lab.waitForLine(forwarder, /ready/);
    await startRelays(lab);
    const paths = {
      vif: ADDR.pod,
      direct: ADDR.podDirect,
      tunnel: '127.0.0.1:18080',
      splice: `127.0.0.1:${RELAY_PORTS.splice[0]}`,
      copy: `127.0.0.1:${RELAY_PORTS.copy[0]}`,
    } as const;
    const bulk = async (host: string): Promise<number> => {
      const r = await lab.exec(
        NS.ws,
        [
          'curl',
          '-sS',
          '-o',
          '/dev/null',
          '--max-time',
          '300',
          '-w',
          '%{size_download} %{speed_download}',
          `http://${host}/zeros?n=${mib * 2 ** 20}`,
        ],
        320_000,
      );
      const [size, speed] = r.stdout.trim().split(' ').map(Number);
      if (r.code !== 0 || size !== mib * 2 ** 20)
        throw new Error(`bulk download from ${host} failed: ${r.stderr || r.stdout}`);
      return speed! / 1e6;
    };
    const requests = async (host: string): Promise<number> => {
      const r = await runWrk({ url: `http://${host}/`, threads: 1, connections, seconds, netns: NS.ws });
      if (r.errors > 0) throw new Error(`wrk against ${host} saw errors: ${r.errorReport}`);
      return r.requestsPerSecond;
    };

    // Warm up every path (connections, JIT), then interleave the rounds so noise hits all alike.
    for (const host of Object.values(paths)) await bulk(host);
    type Path = keyof typeof paths;
    const order: Path[] = ['direct', 'vif', 'tunnel', 'splice', 'copy'];
    const bulkMBs: Record<Path, number[]> = { direct: [], vif: [], tunnel: [], splice: [], copy: [] };
    const reqs: Record<Path, number[]> = { direct: [], vif: [], tunnel: [], splice: [], copy: [] };
    // The relays' CPU in the VIF's rounds (`ip netns exec` execs the command: the child's pid is the manager's).
    const relayPids = [manager.pid!, daemon.pid!];
    const cpu = { bulk: [0, 0], requests: [0, 0] };
    let vifRequests = 0;
    const onVif = async <T>(p: Path, kind: keyof typeof cpu, work: () => Promise<T>): Promise<T> => {
      if (p !== 'vif') return work();
      const before = relayPids.map(cpuSeconds);
      const out = await work();
      relayPids.forEach((pid, i) => {
        cpu[kind][i]! += cpuSeconds(pid) - before[i]!;
      });
      return out;
    };
    for (let i = 0; i < rounds; i++) {
      for (const p of order) bulkMBs[p].push(await onVif(p, 'bulk', () => bulk(paths[p])));
      for (const p of order) {
        const rate = await onVif(p, 'requests', () => requests(paths[p]));
        reqs[p].push(rate);
        if (p === 'vif') vifRequests += rate * seconds;
      }
      process.stderr.write(
        `round ${i + 1}: bulk MB/s ${order.map((p) => `${p} ${bulkMBs[p][i]!.toFixed(0)}`).join(', ')}; ` +
          `keep-alive req/s ${order.map((p) => `${p} ${reqs[p][i]!.toFixed(0)}`).join(', ')}\n`,
      );
    }
    const medians = (of: Record<Path, number[]>) =>
      Object.fromEntries(order.map((p) => [p, median(of[p])])) as Record<Path, number>;
    const b = medians(bulkMBs);
    const r = medians(reqs);
    const bulkRatio = b.vif / b.direct;
    const relayLine = (p: 'splice' | 'copy') =>
      `${b[p].toFixed(0)} MB/s, ${r[p].toFixed(0)} req/s (ratio ${(b[p] / b.direct).toFixed(2)}, ${(r[p] / r.direct).toFixed(2)}; VIF+tunnel / them: ${(b.vif / b[p]).toFixed(2)}, ${(r.vif / r[p]).toFixed(2)})`;
    const gb = (rounds * mib * 2 ** 20) / 1e9;
    const micros = (seconds: number) => ((seconds / vifRequests) * 1e6).toFixed(0);
    const col = (n: number) => n.toFixed(0).padStart(6);
    process.stdout.write(
      [
        `bench/vif: ${mib} MiB bulk x${rounds}, wrk -c${connections} ${seconds}s x${rounds}, TUN MTU ${mtu} (medians); manager: node ${managerFlags.join(' ') || '(no flags)'}`,
        `  bulk        VIF+tunnel ${col(b.vif)} MB/s   direct veth ${col(b.direct)} MB/s   ratio ${bulkRatio.toFixed(2)}  ${bulkRatio >= 1 / 3 ? 'PASS' : 'BELOW'} (mark: >= 0.33)`,
        `  keep-alive  VIF+tunnel ${col(r.vif)} req/s  direct veth ${col(r.direct)} req/s  ratio ${(r.vif / r.direct).toFixed(2)}`,
        `  goal        bulk >= 0.5 x direct: ${bulkRatio >= 0.5 ? 'met' : 'NOT met'}`,
        `  reference   tunnel alone, no VIF: ${b.tunnel.toFixed(0)} MB/s, ${r.tunnel.toFixed(0)} req/s (VIF+tunnel / tunnel alone: ${(b.vif / b.tunnel).toFixed(2)}, ${(r.vif / r.tunnel).toFixed(2)})`,
        `  reference   two HAProxy relays on the VIF's hops, splice: ${relayLine('splice')}`,
        `  reference   two HAProxy relays on the VIF's hops, no splice: ${relayLine('copy')}`,
        `  CPU         per GB of the VIF's bulk rounds: the manager ${(cpu.bulk[0]! / gb).toFixed(2)} s, the root daemon ${(cpu.bulk[1]! / gb).toFixed(2)} s; ` +
          `per request of its keep-alive rounds: the manager ${micros(cpu.requests[0]!)} µs, the root daemon ${micros(cpu.requests[1]!)} µs`,
        '',
      ].join('\n'),
    );
  } finally {
    daemon?.close();
    await stopRootDaemon(socketPath).catch(() => {});
    await lab.down();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`bench/vif: ${e.message}\n`);
  process.exit(1);
});
