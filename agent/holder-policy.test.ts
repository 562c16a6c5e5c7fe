// The holder's restart policy and the TP_LISTEN_FDS format.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeExit, exitCodeOf, formatListenFds, parseListenFds, RestartPolicy } from './holder-policy.js';

const policy = () => new RestartPolicy({ windowMs: 60_000, maxDeaths: 5, baseDelayMs: 250, capMs: 2_000 });

test('the first death is restarted at once, later ones in the window after a doubling delay', () => {
  const p = policy();
  assert.equal(p.died(0), { action: 'restart', delayMs: 0, deathsInWindow: 1 });
  assert.equal(p.died(1_000), { action: 'restart', delayMs: 250, deathsInWindow: 2 });
  assert.equal(p.died(2_000), { action: 'restart', delayMs: 500, deathsInWindow: 3 });
  assert.equal(p.died(3_000), { action: 'restart', delayMs: 1_000, deathsInWindow: 4 });
});

test('the delay is capped', () => {
  const p = new RestartPolicy({ windowMs: 60_000, maxDeaths: 10, baseDelayMs: 250, capMs: 2_000 });
  const delays = [0, 1, 2, 3, 4, 5, 6]
    .map((i) => p.died(i * 100))
    .map((d) => (d.action === 'restart' ? d.delayMs : -1));
  assert.equal(delays, [0, 250, 500, 1_000, 2_000, 2_000, 2_000]);
});

test('the maxDeaths-th death within the window gives up', () => {
  const p = policy();
  for (let i = 0; i < 4; i++) assert.is(p.died(i * 1_000).action, 'restart');
  assert.equal(p.died(4_000), { action: 'give-up', deathsInWindow: 5 });
});

test('deaths older than the window are forgotten: a death now and then is always restarted at once', () => {
  const p = policy();
  for (let i = 0; i < 20; i++)
    assert.equal(p.died(i * 61_000), { action: 'restart', delayMs: 0, deathsInWindow: 1 });
  // The first death has left the window: the fifth is the fourth within it, still restarted.
  const q = policy();
  for (const t of [0, 10_000, 20_000, 30_000]) q.died(t);
  assert.equal(q.died(65_000), { action: 'restart', delayMs: 1_000, deathsInWindow: 4 });
});

test('how a worker ended, and the exit code that follows it', () => {
  assert.is(describeExit(null, 'SIGKILL'), 'signal SIGKILL');
  assert.is(describeExit(1, null), 'exit code 1');
  assert.is(exitCodeOf(3, undefined), 3);
  assert.is(exitCodeOf(null, 9), 137);
  assert.is(exitCodeOf(null, undefined), 1);
});

test('TP_LISTEN_FDS: port=fd pairs, both ways', () => {
  const fds = new Map([
    [15001, 3],
    [15021, 4],
  ]);
  assert.is(formatListenFds(fds), '15001=3,15021=4');
  assert.equal(parseListenFds('15001=3,15021=4'), fds);
  assert.equal(parseListenFds(undefined), new Map());
  assert.equal(parseListenFds(''), new Map());
  assert.throws(() => parseListenFds('15001'), /TP_LISTEN_FDS: "15001" is not port=fd/);
  assert.throws(() => parseListenFds('15001=1'), /fd 3 or above/);
  assert.throws(() => parseListenFds('70000=3'), /expected a number from 1 to 65535/);
});

test.run();
