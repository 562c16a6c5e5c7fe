// Container logs in the CRI log format the kubelet reads ("<RFC3339Nano> <stream> <F|P> <text>"
// per line; P marks a partial line that continues in the next entry), one file per container run, and
// the reader behind /containerLogs (tail, since, timestamps, limitBytes, follow).
import * as fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';

export type LogStream = 'stdout' | 'stderr';

export interface LogEntry {
  time: string;
  stream: LogStream;
  partial: boolean;
  content: string;
}

/** Lines longer than this are split into partial entries, like containerd's 16 KiB limit. */
const MAX_LINE = 16 * 1024;

/** RFC 3339 with nanoseconds, as the CRI writes (microsecond precision, zero-padded). */
export function rfc3339Nano(epochMs: number): string {
  const whole = Math.floor(epochMs);
  const micros = Math.round((epochMs - whole) * 1000);
  const base = new Date(whole).toISOString(); // 2024-01-02T03:04:05.678Z
  return `${base.slice(0, 23)}${String(micros).padStart(3, '0')}000Z`;
}

export function formatLogEntry(e: LogEntry): string {
  return `${e.time} ${e.stream} ${e.partial ? 'P' : 'F'} ${e.content}\n`;
}

export function parseLogLine(line: string): LogEntry | undefined {
  const m = /^(\S+) (stdout|stderr) ([FP]) (.*)$/s.exec(line);
  if (!m) return undefined;
  return { time: m[1]!, stream: m[2] as LogStream, partial: m[3] === 'P', content: m[4]! };
}

/** Splits a byte stream into log entries: complete lines (F), and P entries for long or unfinished ones. */
export class LineSplitter {
  private pending = '';

  constructor(private readonly emit: (content: string, partial: boolean) => void) {}

  push(text: string): void {
    this.pending += text;
    let newline = this.pending.indexOf('\n');
    while (newline >= 0) {
      this.emit(this.pending.slice(0, newline), false);
      this.pending = this.pending.slice(newline + 1);
      newline = this.pending.indexOf('\n');
    }
    while (this.pending.length > MAX_LINE) {
      this.emit(this.pending.slice(0, MAX_LINE), true);
      this.pending = this.pending.slice(MAX_LINE);
    }
  }

  /** End of stream: an unfinished last line stays partial (no newline was written). */
  end(): void {
    if (this.pending !== '') this.emit(this.pending, true);
    this.pending = '';
  }
}

const now = () => performance.timeOrigin + performance.now();

/** Writes one container run's stdout and stderr to its log file. */
export class ContainerLogWriter {
  private readonly out: fs.WriteStream;
  private open = 0;
  private readonly finished: Promise<void>;
  private resolveFinished!: () => void;
  private closed = false;

  constructor(readonly file: string) {
    this.out = fs.createWriteStream(file, { flags: 'a', mode: 0o640 });
    this.out.on('error', () => {}); // a full disk must not take the node agent down
    this.finished = new Promise((resolve) => {
      this.resolveFinished = resolve;
    });
  }

  attach(source: Readable, stream: LogStream): void {
    this.open++;
    const splitter = new LineSplitter((content, partial) =>
      this.out.write(formatLogEntry({ time: rfc3339Nano(now()), stream, partial, content })),
    );
    source.setEncoding('utf8');
    source.on('data', (text: string) => splitter.push(text));
    source.on('error', () => {});
    source.on('close', () => {
      splitter.end();
      if (--this.open === 0) this.close();
    });
  }

  /** Appends a line of the node agent's own (a container that could not start says why). */
  note(stream: LogStream, text: string): void {
    if (this.closed) return;
    for (const line of text.split('\n'))
      this.out.write(formatLogEntry({ time: rfc3339Nano(now()), stream, partial: false, content: line }));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.out.end(() => this.resolveFinished());
  }

  /** Resolves when the process's output is fully written. */
  whenFinished(): Promise<void> {
    return this.finished;
  }

  get isOpen(): boolean {
    return !this.closed;
  }
}

export interface LogQuery {
  follow: boolean;
  tailLines: number | undefined;
  sinceTime: Date | undefined;
  timestamps: boolean;
  limitBytes: number | undefined;
}

/** The /containerLogs query parameters. */
export function parseLogQuery(q: URLSearchParams): LogQuery & { previous: boolean } {
  const bool = (name: string) => q.get(name) === 'true' || q.get(name) === '1';
  const int = (name: string) => {
    const v = q.get(name);
    if (v === null || !/^\d+$/.test(v)) return undefined;
    return Number(v);
  };
  let sinceTime: Date | undefined;
  const sinceSeconds = int('sinceSeconds');
  if (sinceSeconds !== undefined) sinceTime = new Date(Date.now() - sinceSeconds * 1000);
  const since = q.get('sinceTime');
  if (since && !Number.isNaN(Date.parse(since))) sinceTime = new Date(since);
  return {
    follow: bool('follow'),
    previous: bool('previous'),
    timestamps: bool('timestamps'),
    tailLines: int('tailLines'),
    limitBytes: int('limitBytes'),
    sinceTime,
  };
}

/**
 * Renders entries as `kubectl logs` shows them; partial entries continue on the same line.
 * `continuing`: the previous call ended inside a line (follow mode renders in pieces).
 */
export function renderEntries(
  entries: LogEntry[],
  timestamps: boolean,
  continuing = false,
): { text: string; continuing: boolean } {
  let text = '';
  for (const e of entries) {
    if (timestamps && !continuing) text += `${e.time} `;
    text += e.partial ? e.content : `${e.content}\n`;
    continuing = e.partial;
  }
  return { text, continuing };
}

function selectEntries(entries: LogEntry[], query: LogQuery): LogEntry[] {
  let selected = entries;
  if (query.sinceTime) {
    const since = query.sinceTime.getTime();
    selected = selected.filter((e) => Date.parse(e.time) >= since);
  }
  if (query.tailLines !== undefined) {
    // Count whole lines: a partial entry belongs to the line its final F entry ends.
    let lines = 0;
    let i = selected.length;
    while (i > 0) {
      const e = selected[i - 1]!;
      if (!e.partial) {
        if (lines === query.tailLines) break;
        lines++;
      }
      i--;
    }
    selected = selected.slice(i);
  }
  return selected;
}

/** Splits file text into entries; returns the entries and the bytes of an unfinished last line. */
function parseChunk(text: string): { entries: LogEntry[]; rest: string } {
  const lines = text.split('\n');
  const rest = lines.pop() ?? '';
  const entries: LogEntry[] = [];
  for (const line of lines) {
    const e = parseLogLine(line);
    if (e) entries.push(e);
  }
  return { entries, rest };
}

/**
 * Writes a log file to `out` per the query. With follow, keeps reading while `isActive()` (the
 * container run still writes) and until `signal` aborts (the client left).
 */
export async function writeLog(
  file: string,
  query: LogQuery,
  out: Writable,
  isActive: () => boolean,
  signal: AbortSignal,
): Promise<void> {
  let budget = query.limitBytes ?? Number.POSITIVE_INFINITY;
  const send = (text: string): boolean => {
    if (text === '' || budget <= 0) return budget > 0;
    const bytes = Buffer.from(text, 'utf8');
    const chunk = bytes.length > budget ? bytes.subarray(0, budget) : bytes;
    budget -= chunk.length;
    out.write(chunk);
    return budget > 0;
  };
  let offset = 0;
  let rest = '';
  const readNew = (): LogEntry[] => {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return [];
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= offset) return [];
      const buf = Buffer.alloc(size - offset);
      fs.readSync(fd, buf, 0, buf.length, offset);
      offset = size;
      const parsed = parseChunk(rest + buf.toString('utf8'));
      rest = parsed.rest;
      return parsed.entries;
    } finally {
      fs.closeSync(fd);
    }
  };
  let rendered = renderEntries(selectEntries(readNew(), query), query.timestamps);
  if (!send(rendered.text) || !query.follow) return;
  const since = query.sinceTime?.getTime();
  while (!signal.aborted) {
    const active = isActive();
    let entries = readNew();
    if (since !== undefined) entries = entries.filter((e) => Date.parse(e.time) >= since);
    rendered = renderEntries(entries, query.timestamps, rendered.continuing);
    if (!send(rendered.text)) return;
    if (!active) return; // read once more after the run ended, then stop
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 200);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
