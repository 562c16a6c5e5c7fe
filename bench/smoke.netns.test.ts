// Every bench runs, with a tiny size, so none rots between the runs whose figures the docs show: each
// must exit 0 and print its report (the figures and ratios users read in README.md). Sizes here say
// nothing about speed; the benches' own runs do (bench/README in README.md's Measured table).
import * as assert from 'uvu/assert';
import { onPath } from '../command/command.js';
import { runBench } from '../testbed/bench-run.js';
import { notRoot, requirementSuite } from '../testbed/suite.js';

const missingTools = ['wrk', 'haproxy', 'ip', 'iptables-restore'].filter((t) => !onPath(t));
const why =
  notRoot('the benches’ network namespaces') ??
  (missingTools.length ? `needs ${missingTools.join(', ')} (bash .ci/setup installs them)` : undefined);
const { test } = requirementSuite('benches, smoke-run with tiny sizes', why);

/** Runs a bench as its docs show it (node dist/bench/NAME.js FLAGS) and returns what it printed. */
const bench = (name: string, args: string[]) => runBench(name, args, 180_000).out;

test('passthrough: the agent against the app directly, both modes, and the agent’s RSS', () => {
  const out = bench('passthrough', ['--seconds', '1', '--rounds', '1']);
  assert.match(out, /keep-alive .*direct +\d+ req\/s.*agent +\d+ req\/s.*rate ratio \d/);
  assert.match(out, /new connection per request .*rate ratio \d/);
  assert.match(out, /agent RSS: idle [\d.]+ MiB, after the load [\d.]+ MiB/);
});

test('intercept-throughput: both directions through an intercept against a relay chain', () => {
  const out = bench('intercept-throughput', ['--mib', '1', '--rounds', '1']);
  assert.match(out, /client -> app \(upload\) .*relay chain +\d+ MiB\/s +intercept +\d+ MiB\/s +ratio/);
  assert.match(out, /app -> client \(download\) .*ratio/);
});

test("intercept-throughput --direct: through the agent's direct port, against two relays", () => {
  const out = bench('intercept-throughput', ['--mib', '1', '--rounds', '1', '--direct']);
  assert.match(out, /through the agent's direct port/);
  assert.match(out, /client -> app \(upload\) .*ratio/);
  // Two relays for the two processes in between (agent, user daemon); the manager carries no byte.
  assert.match(out, /CPU seconds .*up relay0 [\d.]+, up relay1 [\d.]+, down relay0/);
  assert.not.match(out, /relay2|manager/);
});

test('capture: iptables + agent and HAProxy (addressed, and behind the same REDIRECT) against direct, with the marks', () => {
  const out = bench('capture', ['--seconds', '1', '--rounds', '1']);
  assert.match(out, /mark \(keep-alive\): agent [\d.]+ x direct/);
  assert.match(
    out,
    /goal \(memory\): iptables \+ agent RSS idle [\d.]+ MiB.*of it anonymous [\d.]+ \/ [\d.]+ \/ [\d.]+ MiB/,
  );
  // The CPU per request of the agent and HAProxy, each mode.
  assert.match(out, /keep-alive +iptables \+ agent .* [\d.]+(us|ms)\n/);
  assert.match(out, /new connection haproxy \(tcp\) .* [\d.]+(us|ms)\n/);
  // HAProxy behind the same REDIRECT as the agent: answered (no errors), its CPU shown, compared.
  assert.match(out, /keep-alive +iptables \+ haproxy +\d+ .* 0 +[\d.]+(us|ms)\n/);
  assert.match(
    out,
    /goal \(new connection\): .*like for like, haproxy behind the same REDIRECT [\d.]+ x direct: (met|NOT met)/,
  );
});

test('capture-ebpf: the sk_lookup program idle and steering, against direct', () => {
  const out = bench('capture-ebpf', ['--seconds', '1', '--rounds', '1']);
  assert.match(out, /mark \(throughput, keep-alive\): ebpf idle within 5% of direct: (MET|MISSED)/);
});

test('vif: bulk and keep-alive through the VIF against a direct veth and two HAProxy relays', () => {
  const out = bench('vif', ['--mib', '1', '--rounds', '1', '--seconds', '1']);
  assert.match(out, /bulk +VIF\+tunnel +\d+ MB\/s +direct veth +\d+ MB\/s +ratio [\d.]+/);
  assert.match(out, /keep-alive +VIF\+tunnel +\d+ req\/s/);
  assert.match(out, /goal +bulk >= 0\.5 x direct: (met|NOT met)/);
  for (const kind of ['splice', 'no splice'])
    assert.match(
      out,
      new RegExp(
        `two HAProxy relays on the VIF's hops, ${kind}: \\d+ MB/s, \\d+ req/s \\(ratio [\\d.]+, [\\d.]+; VIF\\+tunnel / them: [\\d.]+, [\\d.]+\\)`,
      ),
    );
  assert.match(
    out,
    /CPU +per GB of the VIF's bulk rounds: the manager [\d.]+ s, the root daemon [\d.]+ s; per request of its keep-alive rounds: the manager \d+ µs, the root daemon \d+ µs/,
  );
});

test('personal-passthrough: requests without the header, direct / plain passthrough / personal intercept', () => {
  const out = bench('personal-passthrough', ['--seconds', '1', '--rounds', '1', '--connections', '2']);
  assert.match(out, /ratios: personal\/direct [\d.]+, personal\/plain passthrough [\d.]+/);
  assert.match(out, /agent RSS after the load: [\d.]+ MiB/);
});

test.run();
