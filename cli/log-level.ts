// tp loglevel: the level and the duration as typed, checked before anything is sent.
import { type Level, parseLevel } from '../logging/logger.js';
import { parseDuration, UsageError } from '../netaddr/parse.js';

/** The longest --duration: a level meant for one debugging session, not a setting. */
const MAX_DURATION_SECONDS = 24 * 3600;

export function parseLogLevel(value: string): Level {
  try {
    return parseLevel(value);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * `--duration`: a duration as every tp flag takes one (netaddr/parse.ts: 90s, 30m, 1h30m, 1.5h), in whole
 * seconds (a fraction rounds up); at most 24h.
 */
export function parseDurationSeconds(value: string): number {
  const seconds = Math.ceil(parseDuration(value, '--duration') / 1000);
  if (seconds > MAX_DURATION_SECONDS) throw new UsageError(`--duration "${value}": must be at most 24h`);
  return seconds;
}

/** 5400 -> "1h30m", 90 -> "1m30s". */
export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s || (!h && !m) ? `${s}s` : ''}`;
}

/** What tp loglevel prints once the daemons answered. */
export function logLevelText(
  level: Level,
  durationSeconds: number,
  result: { previous: string; rootDaemon: string },
): string {
  const span = durationSeconds > 0 ? ` for ${formatDuration(durationSeconds)} (then ${result.previous})` : '';
  const who = result.rootDaemon === '' ? 'the user daemon and the root daemon' : 'the user daemon';
  return [
    `Log level ${level}${span} on ${who}`,
    ...(result.rootDaemon === '' ? [] : [`root daemon: ${result.rootDaemon}`]),
    `The traffic manager and the agents log at the chart's logLevel: tp helm upgrade --set logLevel=${level}`,
    '',
  ].join('\n');
}
