import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RestartBackoff } from './restart-backoff.js';

test('first restart at once, then 10 s, 20 s, 40 s after each crash, capped at 5 min', () => {
  const b = new RestartBackoff();
  let t = 1_000_000;
  assert.is(b.restartAt(t, t), undefined, 'the first crash restarts at once');
  b.recordRestart(t);
  const delays: number[] = [];
  for (let i = 0; i < 7; i++) {
    t += 1000; // crashes one second after each restart
    const at = b.restartAt(t, t)!;
    delays.push((at - t) / 1000);
    b.recordRestart(t);
    t = at;
  }
  assert.equal(delays, [10, 20, 40, 80, 160, 300, 300]);
  assert.is(b.seconds, 300);
});

test('a crash after the back-off has passed restarts at once; a long healthy run starts over', () => {
  const b = new RestartBackoff();
  b.recordRestart(0);
  assert.is(b.restartAt(5_000, 20_000), undefined, 'the 10 s since the crash have passed');
  b.recordRestart(5_000);
  assert.is(b.seconds, 20);
  const muchLater = 5_000 + 11 * 60_000;
  assert.is(b.restartAt(muchLater, muchLater), undefined);
  b.recordRestart(muchLater);
  assert.is(b.seconds, 10, 'after more than 10 minutes the back-off resets');
});

test.run();
