// Agent passthrough cost: HTTP request rate and latency through tp-agent's passthrough against the app
// directly, in the same run, with wrk: keep-alive connections, and a new connection per request. Also
// the agent's resident memory when idle and after the load.
//
//   node dist/bench/passthrough.js [--seconds 5] [--rounds 3] [--connections 16]
//
// `--role app PORT` runs the HTTP app (a separate process, as in a pod).
import { execFileSync } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { canConnect, dist, freePort, median, Processes, rssMiB, waitFor } from './rig.js';

const self = fileURLToPath(import.meta.url);

interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

function toMs(value: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(value);
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 's' ? n * 1000 : n;
}

function wrk(
  port: number,
  seconds: number,
  connections: number,
  newConnectionPerRequest: boolean,
): WrkResult {
  const args = ['-t2', `-c${connections}`, `-d${seconds}s`, '--latency'];
  if (newConnectionPerRequest) args.push('-H', 'Connection: close');
  const out = execFileSync('wrk', [...args, `http://127.0.0.1:${port}/`], { encoding: 'utf8' });
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out);
  const p99 = /^\s+99%\s+(\S+)/m.exec(out);
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out);
  if (!rps || !p50 || !p99) throw new Error(`unexpected wrk output:\n${out}`);
  if (errors && !newConnectionPerRequest) throw new Error(`wrk saw errors: ${errors[0]}`);
  return { rps: Number(rps[1]), p50Ms: toMs(p50[1]!), p99Ms: toMs(p99[1]!) };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: number) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : fallback;
  };
  const seconds = arg('--seconds', 5);
  const rounds = arg('--rounds', 3);
  const connections = arg('--connections', 16);
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (e) {
    // wrk --version exits 1 but runs; only a missing binary is a problem.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new Error('wrk is not installed: apt-get install wrk');
  }
  const p = new Processes();
  try {
    const ports = { app: await freePort(), manager: await freePort(), agent: await freePort() };
    p.node('app', [self, '--role', 'app', String(ports.app)]);
    p.node('manager', [
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
    await waitFor('the app', () => canConnect(ports.app));
    await waitFor('the agent', () => canConnect(ports.agent));
    // Idle: arrived at the manager, no traffic yet.
    await new Promise((r) => setTimeout(r, 3000));
    const idleRss = rssMiB(agent.pid!);

    const runs = {
      keepAlive: { direct: [] as WrkResult[], agent: [] as WrkResult[] },
      newConnection: { direct: [] as WrkResult[], agent: [] as WrkResult[] },
    };
    wrk(ports.agent, 1, connections, false); // warm-up
    for (let r = 0; r < rounds; r++)
      for (const [mode, fresh] of [
        ['keepAlive', false],
        ['newConnection', true],
      ] as const) {
        runs[mode].direct.push(wrk(ports.app, seconds, connections, fresh));
        runs[mode].agent.push(wrk(ports.agent, seconds, connections, fresh));
      }
    const loadedRss = rssMiB(agent.pid!);

    const summary = (xs: WrkResult[]) => ({
      rps: median(xs.map((x) => x.rps)),
      p50: median(xs.map((x) => x.p50Ms)),
      p99: median(xs.map((x) => x.p99Ms)),
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
            { direct: v.direct.map((x) => Math.round(x.rps)), agent: v.agent.map((x) => Math.round(x.rps)) },
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
