// Agent passthrough cost: HTTP request rate and latency through tp-agent's passthrough against the app
// directly, in the same run, with wrk: keep-alive connections, and a new connection per request. Also
// the agent's resident memory when idle and after the load.
//
//   node dist/bench/passthrough.js [--seconds 5] [--rounds 3] [--connections 16]
//
// `--role app PORT` runs the HTTP app (a separate process, as in a pod).
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import { freePorts } from '../testbed/loopback.js';
import { benchFlags, median, Processes, rssMiB, startManagerAndAgent, waitForListener } from './rig.js';
import { requireWrk, runWrk, type WrkRun } from './wrk.js';

const self = fileURLToPath(import.meta.url);

async function main(): Promise<void> {
  const { seconds, rounds, connections } = benchFlags({ seconds: 5, rounds: 3, connections: 16 });
  requireWrk();
  const wrk = async (port: number, duration: number, newConnectionPerRequest: boolean) => {
    const r = await runWrk({
      url: `http://127.0.0.1:${port}/`,
      threads: 2,
      connections,
      seconds: duration,
      newConnectionPerRequest,
    });
    // A new connection per request may run out of ports on loopback; keep-alive must be clean.
    if (r.errors > 0 && !newConnectionPerRequest) throw new Error(`wrk saw errors: ${r.errorReport}`);
    return r;
  };
  const p = new Processes();
  try {
    const [app, manager, agent] = await freePorts(3);
    const ports = { app, manager, agent };
    p.node('app', [self, '--role', 'app', String(ports.app)]);
    await waitForListener('the app', ports.app);
    const { agentPid } = await startManagerAndAgent(p, ports);
    // Idle: arrived at the manager, no traffic yet.
    await new Promise((r) => setTimeout(r, 3000));
    const idleRss = rssMiB(agentPid);

    const runs = {
      keepAlive: { direct: [] as WrkRun[], agent: [] as WrkRun[] },
      newConnection: { direct: [] as WrkRun[], agent: [] as WrkRun[] },
    };
    await wrk(ports.agent, 1, false); // warm-up
    for (let r = 0; r < rounds; r++)
      for (const [mode, fresh] of [
        ['keepAlive', false],
        ['newConnection', true],
      ] as const) {
        runs[mode].direct.push(await wrk(ports.app, seconds, fresh));
        runs[mode].agent.push(await wrk(ports.agent, seconds, fresh));
      }
    const loadedRss = rssMiB(agentPid);

    const summary = (xs: WrkRun[]) => ({
      rps: median(xs.map((x) => x.requestsPerSecond)),
      p50: median(xs.map((x) => x.p50Micros / 1000)),
      p99: median(xs.map((x) => x.p99Micros / 1000)),
    });
    console.log(
      `agent passthrough vs direct: wrk -t2 -c${connections} -d${seconds}s, median of ${rounds} interleaved rounds`,
    );
    for (const [mode, label] of [
      ['keepAlive', 'keep-alive'],
      ['newConnection', 'new connection per request'],
    ] as const) {
      const d = summary(runs[mode].direct);
      const a = summary(runs[mode].agent);
      console.log(
        `${label.padEnd(28)} direct ${d.rps.toFixed(0).padStart(6)} req/s p50 ${d.p50.toFixed(2)} ms p99 ${d.p99.toFixed(2)} ms | ` +
          `agent ${a.rps.toFixed(0).padStart(6)} req/s p50 ${a.p50.toFixed(2)} ms p99 ${a.p99.toFixed(2)} ms | ` +
          `rate ratio ${(a.rps / d.rps).toFixed(2)}`,
      );
    }
    console.log(`agent RSS: idle ${idleRss.toFixed(1)} MiB, after the load ${loadedRss.toFixed(1)} MiB`);
    console.log(
      `all rounds (req/s): ${JSON.stringify(
        Object.fromEntries(
          Object.entries(runs).map(([k, v]) => [
            k,
            {
              direct: v.direct.map((x) => Math.round(x.requestsPerSecond)),
              agent: v.agent.map((x) => Math.round(x.requestsPerSecond)),
            },
          ]),
        ),
      )}`,
    );
  } finally {
    p.close();
  }
}

if (process.argv[2] === '--role' && process.argv[3] === 'app') {
  http
    .createServer((_req, res) => res.end('hello from the app\n'))
    .listen(Number(process.argv[4]), '127.0.0.1');
} else
  main().catch((e) => {
    console.error(`passthrough: ${(e as Error).message}`);
    process.exit(1);
  });
