// bench/faults, smoke-run on the lab with a short network drop, so the command whose table README.md's
// Reliability section shows cannot rot between its runs: it must exit 0 and print a row for each of the five
// faults and that tp leave worked. The rig it drives is e2e/faults' (fault-rig.ts), whose scenarios assert
// the outcomes; this run asserts the bench's own part: its flags, its lab session and its report.
import * as assert from 'uvu/assert';
import { runBench } from '../../testbed/bench-run.js';
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
    const r = runBench('faults', ['--drop-seconds', '2'], 900_000);
    assert.match(r.stdout, /node dist\/bench\/faults\.js --drop-seconds 2/);
    assert.match(
      r.stdout,
      /^\| fault \| failed requests \| failed through the VIF \| intercept back after \| notes \|$/m,
    );
    const rows = r.stdout.split('\n').filter((l) => /^\| [^-|]/.test(l) && !l.startsWith('| fault |'));
    assert.is(rows.length, 5, `one row per fault:\n${r.stdout}`);
    for (const row of rows) assert.match(row, /\| \d+ of \d+ \| \d+ of \d+ \(slowest [\d.]+ s\) \| /);
    assert.match(r.stdout, /tp leave: worked; the app answers afterwards: yes/);
  });
}

test.run();
