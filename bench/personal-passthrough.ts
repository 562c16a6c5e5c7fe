// Personal intercepts: what requests that do not match cost. wrk (keep-alive, no x-dev header) against
// the app directly, through the agent's plain passthrough (no intercept on the port), and through the
// agent while a personal intercept (`--http-header x-dev=bench`) holds the port, so every request is parsed,
// matched and re-originated to the app. Rounds interleave the three (the intercept is left and made again
// each round); the ratios are against the app reached directly and against the plain passthrough.
//
//   node dist/bench/personal-passthrough.js [--seconds 5] [--rounds 3] [--connections 16]
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import { freePorts } from '../testbed/loopback.js';
import { benchFlags, median, Processes, rssMiB, startIntercept, waitForListener } from './rig.js';
import { requireWrk, runWrk, type WrkRun } from './wrk.js';

const self = fileURLToPath(import.meta.url);

/** GET / with the header, or without, on a new connection (an open one keeps the path it was given): the body. */
function get(port: number, dev?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(
        { host: '127.0.0.1', port, path: '/', agent: false, headers: dev ? { 'x-dev': dev } : {} },
        (res) => {
          let body = '';
          res.on('data', (d) => {
            body += d;
          });
          res.on('end', () => resolve(body));
        },
      )
      .on('error', reject);
  });
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  const { seconds, rounds, connections } = benchFlags({ seconds: 5, rounds: 3, connections: 16 });
  requireWrk();
  const wrk = async (port: number, duration: number) => {
    const r = await runWrk({
      url: `http://127.0.0.1:${port}/`,
      threads: 2,
      connections,
      seconds: duration,
      newConnectionPerRequest: false,
    });
    if (r.errors > 0) throw new Error(`wrk saw errors: ${r.errorReport}`);
    return r;
  };
  const p = new Processes();
  try {
    const [app, manager, agent, local] = await freePorts(4);
    const ports = { app, manager, agent, local };
    p.node('app', [self, '--role', 'app', String(ports.app), 'app']);
    p.node('workstation', [self, '--role', 'app', String(ports.local), 'workstation']);
    await waitForListener('the app', ports.app);
    await waitForListener("the workstation's app", ports.local);
    const filter = ['--http-header', 'x-dev=bench'];
    const { agentPid } = await startIntercept(p, ports, filter);
    // The intercept is personal: the header reaches the workstation, anything else the app.
    await until('the personal intercept', async () => (await get(ports.agent, 'bench')) === 'workstation');
    if ((await get(ports.agent)) !== 'app')
      throw new Error('a request without the header did not reach the app');

    const runs = { direct: [] as WrkRun[], plain: [] as WrkRun[], personal: [] as WrkRun[] };
    await wrk(ports.agent, 1); // warm-up: the HTTP code loaded and compiled
    for (let r = 0; r < rounds; r++) {
      runs.direct.push(await wrk(ports.app, seconds));
      runs.personal.push(await wrk(ports.agent, seconds));
      p.tp('leave', 'bench');
      await until('the plain passthrough', async () => (await get(ports.agent, 'bench')) === 'app');
      runs.plain.push(await wrk(ports.agent, seconds));
      p.tp('intercept', 'bench', '--port', `${ports.local}:${ports.app}`, ...filter);
      await until('the personal intercept', async () => (await get(ports.agent, 'bench')) === 'workstation');
    }
    const rate = (xs: WrkRun[]) => median(xs.map((x) => x.requestsPerSecond));
    const p50 = (xs: WrkRun[]) => median(xs.map((x) => x.p50Micros / 1000));
    console.log(
      `personal intercept, requests without the header: wrk -t2 -c${connections} -d${seconds}s keep-alive, median of ${rounds} interleaved rounds`,
    );
    for (const [k, label] of [
      ['direct', 'the app directly'],
      ['plain', 'agent, plain passthrough'],
      ['personal', 'agent, personal intercept'],
    ] as const)
      console.log(
        `${label.padEnd(26)} ${rate(runs[k]).toFixed(0).padStart(6)} req/s p50 ${p50(runs[k]).toFixed(2)} ms`,
      );
    console.log(
      `ratios: personal/direct ${(rate(runs.personal) / rate(runs.direct)).toFixed(2)}, ` +
        `personal/plain passthrough ${(rate(runs.personal) / rate(runs.plain)).toFixed(2)}, ` +
        `plain/direct ${(rate(runs.plain) / rate(runs.direct)).toFixed(2)}`,
    );
    console.log(`agent RSS after the load: ${rssMiB(agentPid).toFixed(1)} MiB`);
    console.log(
      `all rounds (req/s): ${JSON.stringify(Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, v.map((x) => Math.round(x.requestsPerSecond))])))}`,
    );
  } finally {
    p.close();
  }
}

if (process.argv[2] === '--role' && process.argv[3] === 'app') {
  const answer = process.argv[5] ?? 'app';
  http.createServer((_req, res) => res.end(answer)).listen(Number(process.argv[4]), '127.0.0.1');
} else
  main().catch((e) => {
    console.error(`personal-passthrough: ${(e as Error).message}`);
    process.exit(1);
  });
