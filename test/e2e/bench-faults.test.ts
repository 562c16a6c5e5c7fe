// bench/faults, smoke-run on the lab with a short network drop, so the command whose table README.md's
// Reliability section shows cannot rot between its runs: it must exit 0 and print a row for each of the five
// faults and that tp leave worked. The rig it drives is e2e/faults' (fault-rig.ts), whose scenarios assert
// the outcomes; this run asserts the bench's own part: its flags, its lab session and its report.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as assert from 'uvu/assert';
import { externalKubeconfig } from './cluster.js';
import { clusterSuite, scenarioIf } from './suite.js';

const { test, cluster } = await clusterSuite('bench/faults, smoke-run');
if (cluster) {
  const run = scenarioIf(
    test,
    (name, body) => test(name, body),
    externalKubeconfig() ? 'the bench restarts the lab API server: it runs on the lab only' : undefined,
  );
  run('the bench injects each fault and prints its table row, then leaves', async () => {
    const bench = path.resolve(import.meta.dirname, '..', '..', 'bench', 'faults.js');
    const r = spawnSync(process.execPath, ['--', bench, '--drop-seconds', '2'], {
      encoding: 'utf8',
      timeout: 900_000,
    });
    const out = `${r.stdout}${r.stderr}`;
    assert.is(r.status, 0, `bench/faults exited ${r.status ?? r.signal}:\n${out.slice(-4000)}`);
    assert.match(r.stdout, /node dist\/bench\/faults\.js --drop-seconds 2/);
    assert.match(r.stdout, /^\| fault \| failed requests \| intercept back after \| notes \|$/m);
    const rows = r.stdout.split('\n').filter((l) => /^\| [^-|]/.test(l) && !l.startsWith('| fault |'));
    assert.is(rows.length, 5, `one row per fault:\n${r.stdout}`);
    for (const row of rows) assert.match(row, /\| \d+ of \d+ \| /);
    assert.match(r.stdout, /tp leave: worked; the app answers afterwards: yes/);
  });
}

test.run();
