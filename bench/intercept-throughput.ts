// Intercept throughput: 100 MiB through client -> agent -> manager -> user daemon -> local app, checked
// by sha256, against a chain of plain Node TCP relays with the same hops (three relay processes) in the
// same run. Prints MiB/s for both, each direction, and the ratio. With --direct the intercept takes the
// agent's direct port, as it does through the API server (client -> agent -> user daemon -> local app, on
// a flow connection of its own: tunnel/framed-call.ts), against two relays.
//
//   node dist/bench/intercept-throughput.js [--mib 100] [--rounds 3] [--direct]
//
// The same file also runs the helper processes: `--role app PORT` (the endpoint: hashes what it
// receives, or sends a known stream) and `--role relay PORT NEXT_PORT` (a plain TCP relay).
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';
import { freePorts } from '../testbed/loopback.js';
import { benchFlags, cpuSeconds, median, Processes, startIntercept, waitForListener } from './rig.js';

const MiB = 1 << 20;
const self = fileURLToPath(import.meta.url);

/** A deterministic pseudo-random stream (AES-CTR over zeros), so both ends can check it. */
function keystream(seed: string, n: number): Buffer {
  const key = crypto.createHash('sha256').update(seed).digest().subarray(0, 16);
  return crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

/** Writes a buffer in 1 MiB slices with backpressure, then half-closes. */
function send(s: net.Socket, data: Buffer): void {
  let off = 0;
  const pump = () => {
    while (off < data.length) {
      const slice = data.subarray(off, off + MiB);
      off += slice.length;
      if (!s.write(slice)) return void s.once('drain', pump);
    }
    s.end();
  };
  pump();
}

/** The endpoint: "U" + data + FIN -> answers "<sha256> <bytes>\n"; "D<bytes>\n" + FIN -> sends the stream. */
function runApp(port: number): void {
  const cache = new Map<number, Buffer>();
  net
    .createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.once('readable', function first() {
        const head = s.read(1) as Buffer | null;
        if (!head) return void s.once('readable', first);
        if (head.toString() === 'U') {
          const h = crypto.createHash('sha256');
          let n = 0;
          s.on('data', (d: Buffer) => {
            h.update(d);
            n += d.length;
          });
          s.on('end', () => s.end(`${h.digest('hex')} ${n}\n`));
        } else {
          let text = '';
          s.on('data', (d) => {
            text += d;
          });
          s.on('end', () => {
            const n = Number(text.trim());
            if (!cache.has(n)) cache.set(n, keystream('download', n));
            send(s, cache.get(n)!);
          });
        }
      });
    })
    .listen(port, '127.0.0.1');
}

function runRelay(port: number, next: number): void {
  net
    .createServer({ allowHalfOpen: true, noDelay: true }, (a) => {
      const b = net.connect({ port: next, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
      a.pipe(b);
      b.pipe(a);
      a.on('error', () => b.destroy());
      b.on('error', () => a.destroy());
    })
    .listen(port, '127.0.0.1');
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Uploads `data`; returns seconds, after checking the app's hash. */
async function upload(port: number, data: Buffer, expected: string): Promise<number> {
  const s = await connect(port);
  const t0 = process.hrtime.bigint();
  const answer = new Promise<string>((resolve, reject) => {
    let text = '';
    s.on('data', (d) => {
      text += d;
    });
    s.on('end', () => resolve(text.trim()));
    s.on('error', reject);
  });
  s.write('U');
  send(s, data);
  const got = await answer;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (got !== `${expected} ${data.length}`) throw new Error(`upload corrupted: app saw "${got}"`);
  return secs;
}

/** Downloads n bytes; returns seconds, after checking their hash. */
async function download(port: number, n: number, expected: string): Promise<number> {
  const s = await connect(port);
  const t0 = process.hrtime.bigint();
  const h = crypto.createHash('sha256');
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      h.update(d);
      got += d.length;
    });
    s.on('end', resolve);
    s.on('error', reject);
  });
  s.end(`D${n}\n`);
  await done;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (got !== n || h.digest('hex') !== expected) throw new Error(`download corrupted: ${got} of ${n} bytes`);
  return secs;
}

async function main(): Promise<void> {
  const { mib, rounds, direct } = benchFlags({ mib: 100, rounds: 3 }, ['direct']);
  const bytes = mib * MiB;
  const p = new Processes();
  try {
    // As many relays as the intercept has processes between the client and the app.
    const [app, manager, agent, workloadApp, directPort, ...relays] = await freePorts(direct ? 7 : 8);
    const ports = { app, manager, agent, workloadApp, relays };
    p.node('app', [self, '--role', 'app', String(ports.app)]);
    // The relay chain: r0 -> r1 -> r2 -> app, the same number of processes between client and app.
    const relayPids = ports.relays.map(
      (port, i) =>
        p.node(`relay${i}`, [self, '--role', 'relay', String(port), String(ports.relays[i + 1] ?? ports.app)])
          .pid!,
    );
    await waitForListener('the app', ports.app);
    for (const r of ports.relays) await waitForListener('a relay', r);
    // The intercept: the workload's app port is never dialed (the intercept takes every connection).
    const tp = await startIntercept(p, {
      manager: ports.manager,
      app: ports.workloadApp,
      agent: ports.agent,
      local: ports.app,
      ...(direct ? { direct: directPort } : {}),
    });
    const hops = {
      relays: relayPids.map((pid, i) => [`relay${i}`, pid] as const),
      intercept: [
        ['agent', tp.agentPid],
        ...(direct ? [] : [['manager', tp.managerPid] as const]),
        ['user daemon', tp.daemonPid],
      ] as const,
    };
    // CPU seconds each hop spends per transfer: load-independent, shows where the time goes.
    const cpu: Record<string, number[]> = {};

    const data = keystream('upload', bytes);
    const upHash = crypto.createHash('sha256').update(data).digest('hex');
    const downHash = crypto.createHash('sha256').update(keystream('download', bytes)).digest('hex');
    const paths = { relays: ports.relays[0]!, intercept: ports.agent };
    const results: Record<string, { up: number[]; down: number[] }> = {
      relays: { up: [], down: [] },
      intercept: { up: [], down: [] },
    };
    // Warm up both paths (JIT, connections), then interleave the measured rounds.
    const warmUp = data.subarray(0, 8 * MiB);
    const warmUpHash = crypto.createHash('sha256').update(warmUp).digest('hex');
    for (const port of Object.values(paths)) await upload(port, warmUp, warmUpHash);
    for (let r = 0; r < rounds; r++) {
      for (const name of ['relays', 'intercept'] as const) {
        for (const dir of ['up', 'down'] as const) {
          const before = hops[name].map(([, pid]) => cpuSeconds(pid));
          const secs =
            dir === 'up'
              ? await upload(paths[name], data, upHash)
              : await download(paths[name], bytes, downHash);
          results[name]![dir].push(mib / secs);
          hops[name].forEach(([hop, pid], i) => {
            const key = `${dir} ${hop}`;
            cpu[key] = [...(cpu[key] ?? []), cpuSeconds(pid) - before[i]!];
          });
        }
      }
    }
    const fmt = (x: number) => `${x.toFixed(0)} MiB/s`;
    const line = (dir: 'up' | 'down', label: string) => {
      const relay = median(results.relays!.up.length ? results.relays![dir] : [0]);
      const tp = median(results.intercept![dir]);
      return `${label.padEnd(36)} relay chain ${fmt(relay).padStart(10)}   intercept ${fmt(tp).padStart(10)}   ratio ${(tp / relay).toFixed(2)}`;
    };
    console.log(
      `intercept throughput${direct ? " through the agent's direct port" : ''}, ${mib} MiB per transfer, sha256 checked, median of ${rounds}`,
    );
    console.log(line('up', 'client -> app (upload)'));
    console.log(line('down', 'app -> client (download)'));
    console.log(
      `CPU seconds per ${mib} MiB (median): ${Object.entries(cpu)
        .map(([k, v]) => `${k} ${median(v).toFixed(2)}`)
        .join(', ')}`,
    );
    console.log(
      `all rounds (MiB/s): ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { up: v.up.map(Math.round), down: v.down.map(Math.round) }])))}`,
    );
    p.tp('quit');
  } finally {
    p.close();
  }
}

const role = process.argv[2] === '--role' ? process.argv[3] : undefined;
if (role === 'app') runApp(Number(process.argv[4]));
else if (role === 'relay') runRelay(Number(process.argv[4]), Number(process.argv[5]));
else
  main().catch((e) => {
    console.error(`intercept-throughput: ${(e as Error).message}`);
    process.exit(1);
  });
