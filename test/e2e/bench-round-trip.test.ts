// bench/round-trip, smoke-run with tiny sizes on the lab so it cannot rot between the runs whose figures
// docs/kubernetes.md and README.md show: it must exit 0 and print each row with its ratio and mark.
// Says nothing about speed (the bench's own full run does).
import * as assert from 'uvu/assert';
import { runBench } from '../../testbed/bench-run.js';
import { externalKubeconfig } from './cluster.js';
import { clusterSuite, scenarioIf } from './suite.js';

const { test, cluster } = await clusterSuite('bench/round-trip, smoke-run');
if (cluster) {
  const run = scenarioIf(
    test,
    (name, body) => test(name, body),
    externalKubeconfig() ? 'the bench runs on the lab only' : undefined,
  );
  run('the bench runs through the port-forward and prints every row with its ratio and mark', async () => {
    const { out } = runBench(
      'round-trip',
      ['--rounds', '1', '--seconds', '1', '--mib', '1', '--hol-mib', '8'],
      600_000,
    );
    for (const row of [/intercept/i, /VIF/, /kubectl port-forward/]) assert.match(out, row);
    assert.match(out, /\b(MET|BELOW)\b/);
    assert.match(out, /\n {4}50 connections +tp +\d+ req\/s/, 'the row of 50 connections at once');
    assert.match(out, /CPU per MiB, bulk \(last round; µs\):\n {2}interceptAnchor to the workstation +\S/);
    assert.match(out, /\n {2}intercept to the workstation +\S/);
  });
}

test.run();
