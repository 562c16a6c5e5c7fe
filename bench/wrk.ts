// wrk, the HTTP load generator every bench measures request rates with: one way to run it, in a network
// namespace or not, and one reader of its report.
import { execFile, execFileSync } from 'node:child_process';

export interface WrkRun {
  requestsPerSecond: number;
  /** Latency percentiles; NaN when wrk printed none. */
  p50Micros: number;
  p99Micros: number;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. */
  errors: number;
  /** wrk's own lines about those errors, for a message; empty when there were none. */
  errorReport: string;
}

export interface WrkOptions {
  url: string;
  threads: number;
  connections: number;
  seconds: number;
  /** Sends `Connection: close`, so every request opens a new connection. */
  newConnectionPerRequest?: boolean;
  /** Runs wrk in this network namespace (ip netns exec). */
  netns?: string;
}

/** wrk's time units (its units.c), in microseconds. */
const MICROS = { us: 1, ms: 1_000, s: 1_000_000, m: 60_000_000, h: 3_600_000_000 } as const;

/** wrk's report: "Requests/sec:", the 50% and 99% lines of the latency distribution, the error lines. */
export function parseWrk(output: string): WrkRun {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(output);
  if (!rps) throw new Error(`wrk printed no Requests/sec:\n${output}`);
  const percentile = (p: number) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m|h)\\b`, 'm').exec(output);
    return m ? Number(m[1]) * MICROS[m[2] as keyof typeof MICROS] : Number.NaN;
  };
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  const errors =
    (socketErrors ? socketErrors.slice(1).reduce((n, v) => n + Number(v), 0) : 0) +
    (non2xx ? Number(non2xx[1]) : 0);
  const errorReport = [socketErrors?.[0], non2xx?.[0]].filter(Boolean).join('; ');
  return {
    requestsPerSecond: Number(rps[1]),
    p50Micros: percentile(50),
    p99Micros: percentile(99),
    errors,
    errorReport,
  };
}

export function runWrk(o: WrkOptions): Promise<WrkRun> {
  const wrk = ['wrk', `-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--latency'];
  if (o.newConnectionPerRequest) wrk.push('-H', 'Connection: close');
  wrk.push(o.url);
  const [command, ...args] = o.netns ? ['ip', 'netns', 'exec', o.netns, ...wrk] : wrk;
  return new Promise((resolve, reject) => {
    execFile(command!, args, { timeout: (o.seconds + 30) * 1000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`wrk against ${o.url} failed: ${err.message}\n${stderr}`));
      else resolve(parseWrk(stdout));
    });
  });
}

/** Fails with the fix when wrk is not installed. */
export function requireWrk(): void {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (e) {
    // wrk --version exits 1 but runs; only a missing binary is a problem.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new Error('wrk is not installed: apt-get install wrk');
  }
}
