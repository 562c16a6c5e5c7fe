// The one logger of tp. Daemons log to a file under the user's state directory; commands log to stderr.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type Level = 'error' | 'warn' | 'info' | 'debug' | 'trace';
const ranks: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };

export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  trace(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
  enabled(level: Level): boolean;
}

interface Sink {
  level: number;
  write(line: string): void;
}

const sink: Sink = { level: ranks.info, write: (line) => process.stderr.write(line) };
/** The file logToFile() chose, if any: a worker thread of a daemon logs to the same file. */
let logFile: string | undefined;

export function parseLevel(value: string | undefined, fallback: Level = 'info'): Level {
  const v = (value ?? '').toLowerCase();
  if (v === '') return fallback;
  if (v in ranks) return v as Level;
  throw new Error(`unknown log level "${value}": use one of ${Object.keys(ranks).join(', ')}`);
}

/** Sets the level of every logger (from --log-level or TP_LOG_LEVEL). */
export function setLevel(level: Level): void {
  sink.level = ranks[level];
}

/** A level set for a while (tp loglevel --duration): the level to go back to, and when. */
let temporary: { previous: Level; timer: NodeJS.Timeout; until: number } | undefined;
/** Told of every change setLevelFor makes (the daemon's other threads take the same level). */
const levelListeners = new Set<(level: Level) => void>();

/** Calls `listener` with each level setLevelFor sets, also when a duration has passed. Returns the undo. */
export function onLevelChange(listener: (level: Level) => void): () => void {
  levelListeners.add(listener);
  return () => levelListeners.delete(listener);
}

/**
 * Sets the level at run time (tp loglevel), saying so in the log. With `durationMs` the level before comes
 * back once it has passed; a second change meanwhile replaces the first and keeps that same level to go
 * back to. Returns the level that is (or would be) gone back to.
 */
export function setLevelFor(level: Level, durationMs = 0): Level {
  const previous = temporary?.previous ?? logTarget().level;
  if (temporary) clearTimeout(temporary.timer);
  temporary = undefined;
  const note = (text: string) => {
    // Said whatever either level lets through: a log that goes quiet says why.
    const saved = sink.level;
    sink.level = ranks.info;
    createLogger('logging').info(text);
    sink.level = saved;
  };
  const apply = (l: Level) => {
    setLevel(l);
    for (const listener of levelListeners) listener(l);
  };
  apply(level);
  if (durationMs > 0) {
    const timer = setTimeout(() => {
      temporary = undefined;
      apply(previous);
      note(`log level back to ${previous} (tp loglevel's duration has passed)`);
    }, durationMs);
    timer.unref();
    temporary = { previous, timer, until: Date.now() + durationMs };
    note(`log level ${level} for ${Math.round(durationMs / 1000)} s (tp loglevel), then ${previous}`);
  } else note(`log level ${level} (tp loglevel) until the daemon stops`);
  return previous;
}

/** The level now, in words: "info", or "debug until 2026-12-06T21:40:00Z, then info" during a duration. */
export function levelText(): string {
  const now = logTarget().level;
  if (!temporary) return now;
  return `${now} until ${new Date(temporary.until).toISOString().replace(/\.\d+Z$/, 'Z')}, then ${temporary.previous}`;
}

/** Sends every logger's output to a file (appending), creating its directory. */
export function logToFile(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'a', 0o600);
  logFile = file;
  sink.write = (line) => {
    try {
      fs.writeSync(fd, line);
    } catch {
      // A full disk must not take the daemon down.
    }
  };
}

/** Where this thread's loggers write and at which level: for a worker thread to do the same. */
export function logTarget(): { file?: string; level: Level } {
  const level = (Object.keys(ranks) as Level[]).find((l) => ranks[l] === sink.level) ?? 'info';
  return { file: logFile, level };
}

/** Where daemons keep their logs: $TP_LOG_DIR, else $XDG_STATE_HOME/tp, else ~/.local/state/tp. */
export function logDir(): string {
  if (process.env.TP_LOG_DIR) return process.env.TP_LOG_DIR;
  const state = process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(state, 'tp');
}

function render(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value === 'string')
    return /^[\w.:/@+-]*$/.test(value) && value !== '' ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

export function createLogger(component: string): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ranks[level] > sink.level) return;
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${component}: ${msg}`;
    if (fields)
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${render(v)}`;
    sink.write(`${line}\n`);
  };
  return {
    error: (m, f) => emit('error', m, f),
    warn: (m, f) => emit('warn', m, f),
    info: (m, f) => emit('info', m, f),
    debug: (m, f) => emit('debug', m, f),
    trace: (m, f) => emit('trace', m, f),
    child: (sub) => createLogger(`${component}/${sub}`),
    enabled: (level) => ranks[level] <= sink.level,
  };
}
