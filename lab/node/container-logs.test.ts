import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  ContainerLogWriter,
  formatLogEntry,
  LineSplitter,
  type LogQuery,
  parseLogLine,
  parseLogQuery,
  renderEntries,
  rfc3339Nano,
  writeLog,
} from './container-logs.js';

const query = (q: Partial<LogQuery> = {}): LogQuery => ({
  follow: false,
  tailLines: undefined,
  sinceTime: undefined,
  timestamps: false,
  limitBytes: undefined,
  ...q,
});

function sink(): { out: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk, _e, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { out, text: () => Buffer.concat(chunks).toString() };
}

test('CRI line format: RFC 3339 with nanoseconds, stream, F/P, text', () => {
  assert.match(rfc3339Nano(Date.UTC(2026, 0, 2, 3, 4, 5, 678) + 0.5), /^2026-01-02T03:04:05\.678500000Z$/);
  const line = formatLogEntry({
    time: '2026-01-02T03:04:05.000000000Z',
    stream: 'stderr',
    partial: false,
    content: 'x y',
  });
  assert.is(line, '2026-01-02T03:04:05.000000000Z stderr F x y\n');
  assert.equal(parseLogLine(line.trimEnd()), {
    time: '2026-01-02T03:04:05.000000000Z',
    stream: 'stderr',
    partial: false,
    content: 'x y',
  });
});

test('lines split at newlines; a long or unfinished line becomes partial entries', () => {
  const got: [string, boolean][] = [];
  const s = new LineSplitter((c, p) => got.push([c, p]));
  s.push('a\nb');
  s.push('c\n');
  s.push('x'.repeat(16 * 1024 + 3));
  s.end();
  assert.equal(got.slice(0, 2), [
    ['a', false],
    ['bc', false],
  ]);
  assert.equal(
    got.slice(2).map(([c, p]) => [c.length, p]),
    [
      [16 * 1024, true],
      [3, true],
    ],
  );
  assert.is(
    renderEntries(
      [
        { time: 't1', stream: 'stdout', partial: true, content: 'he' },
        { time: 't2', stream: 'stdout', partial: false, content: 'llo' },
      ],
      true,
    ).text,
    't1 hello\n',
  );
});

test('writer and reader: tail, timestamps, limitBytes, previous runs untouched', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-logs-'));
  try {
    const file = path.join(dir, '0.log');
    const w = new ContainerLogWriter(file);
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    w.attach(stdout, 'stdout');
    w.attach(stderr, 'stderr');
    stdout.write('one\ntwo\n');
    stderr.write('oops\n');
    stdout.end('three\n');
    stderr.end();
    await w.whenFinished();
    const all = sink();
    await writeLog(file, query(), all.out, () => false, new AbortController().signal);
    assert.equal(all.text().split('\n').sort(), ['', 'one', 'oops', 'three', 'two']);
    const tail = sink();
    await writeLog(file, query({ tailLines: 1 }), tail.out, () => false, new AbortController().signal);
    assert.is(tail.text(), 'three\n');
    const ts = sink();
    await writeLog(
      file,
      query({ tailLines: 1, timestamps: true }),
      ts.out,
      () => false,
      new AbortController().signal,
    );
    assert.match(ts.text(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z three\n$/);
    const limited = sink();
    await writeLog(file, query({ limitBytes: 2 }), limited.out, () => false, new AbortController().signal);
    assert.is(limited.text().length, 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('follow streams new lines until the run ends', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-logs-'));
  try {
    const file = path.join(dir, '0.log');
    const w = new ContainerLogWriter(file);
    const stdout = new PassThrough();
    w.attach(stdout, 'stdout');
    stdout.write('first\n');
    const out = sink();
    const done = writeLog(
      file,
      query({ follow: true }),
      out.out,
      () => w.isOpen,
      new AbortController().signal,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    stdout.end('second\n');
    await w.whenFinished();
    await done;
    assert.is(out.text(), 'first\nsecond\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('query parameters', () => {
  const q = parseLogQuery(
    new URLSearchParams('follow=true&tailLines=10&timestamps=true&previous=true&limitBytes=100'),
  );
  assert.equal([q.follow, q.tailLines, q.timestamps, q.previous, q.limitBytes], [true, 10, true, true, 100]);
  assert.ok(parseLogQuery(new URLSearchParams('sinceSeconds=60')).sinceTime!.getTime() < Date.now());
});

test.run();
