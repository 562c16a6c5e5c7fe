// Runs a bench as its docs show it, for the smoke runs that keep every bench from rotting between the runs
// whose figures the docs show (bench/smoke.netns.test.ts, test/e2e/bench-*.test.ts).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as assert from 'uvu/assert';

/** dist/ (this file runs as dist/testbed/bench-run.js). */
const dist = path.resolve(import.meta.dirname, '..');

/**
 * `node dist/bench/NAME.js ARGS…`: asserts that it exits 0 (else fails with the end of what it printed)
 * and returns its stdout and, as `out`, stdout and stderr together.
 */
export function runBench(name: string, args: string[], timeoutMs: number): { stdout: string; out: string } {
  const r = spawnSync(process.execPath, ['--', path.join(dist, 'bench', `${name}.js`), ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  const out = `${r.stdout}${r.stderr}`;
  assert.is(
    r.status,
    0,
    `bench/${name} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${out.slice(-4000)}`,
  );
  return { stdout: r.stdout, out };
}
