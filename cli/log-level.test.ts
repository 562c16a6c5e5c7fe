import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatDuration, logLevelText, parseDurationSeconds, parseLogLevel } from './log-level.js';

test('tp loglevel LEVEL: the logger levels, any case; others refused with the list', () => {
  assert.is(parseLogLevel('debug'), 'debug');
  assert.is(parseLogLevel('TRACE'), 'trace');
  assert.throws(
    () => parseLogLevel('verbose'),
    /unknown log level "verbose": use one of error, warn, info, debug, trace/,
  );
});

test('--duration: the duration syntax of every tp flag, in whole seconds, more than 0 and at most 24h', () => {
  assert.is(parseDurationSeconds('90s'), 90);
  assert.is(parseDurationSeconds('30m'), 1800);
  assert.is(parseDurationSeconds('1h30m'), 5400);
  assert.is(parseDurationSeconds('1.5h'), 5400);
  assert.is(parseDurationSeconds('24h'), 86_400);
  assert.is(parseDurationSeconds('1500ms'), 2, 'a fraction of a second rounds up');
  for (const bad of ['', '30', '5x', 'm', '-1m', '0s'])
    assert.throws(
      () => parseDurationSeconds(bad),
      /invalid --duration ".*": expected a duration such as 15s, 500ms or 2m/,
      bad,
    );
  assert.throws(() => parseDurationSeconds('25h'), /--duration "25h": must be at most 24h/);
  assert.is(formatDuration(5400), '1h30m');
  assert.is(formatDuration(90), '1m30s');
  assert.is(formatDuration(10), '10s');
  assert.is(formatDuration(3600), '1h');
});

test('what tp loglevel prints: the span, who took it, and where the cluster side is set', () => {
  assert.is(
    logLevelText('debug', 1800, { previous: 'info', rootDaemon: '' }),
    "Log level debug for 30m (then info) on the user daemon and the root daemon\nThe traffic manager and the agents log at the chart's logLevel: tp helm upgrade --set logLevel=debug\n",
  );
  const alone = logLevelText('trace', 0, { previous: 'info', rootDaemon: 'no root daemon is running' });
  assert.match(alone, /^Log level trace on the user daemon\nroot daemon: no root daemon is running\n/);
});

test.run();
