// What the agent reports to the manager: its counters per app port and per probe, as they are now.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ConnectionCounters } from './connection-counters.js';
import { countersMessage } from './counter-report.js';

test('the counters as the manager message, ports in order, probes by id', () => {
  const c = new ConnectionCounters([9090, 8080], ['echo/readiness']);
  c.of(8080).passedThrough += 3;
  c.of(9090).intercepted += 3;
  c.of(9090).direct += 2;
  c.of(9090).dialFailures += 2;
  c.probe('echo/readiness').performed += 4;
  c.probe('echo/readiness').failed += 1;
  assert.equal(countersMessage(c), {
    ports: [
      { appPort: 8080, passedThrough: 3, intercepted: 0, dialFailures: 0, direct: 0 },
      { appPort: 9090, passedThrough: 0, intercepted: 3, dialFailures: 2, direct: 2 },
    ],
    probes: [{ probe: 'echo/readiness', performed: 4, failed: 1 }],
    reportedUnixMs: 0,
  });
});

test.run();
