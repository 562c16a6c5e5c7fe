import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PageError, parsePage, splitComment } from './pages.js';

const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');

test('a comment starts at # outside quotes', () => {
  assert.equal(splitComment("tp intercept 'bad # name' --port 1   # fails: x"), [
    "tp intercept 'bad # name' --port 1",
    'fails: x',
  ]);
  assert.equal(splitComment('curl -s a#b'), ['curl -s a#b', '']);
  assert.equal(splitComment('# only a comment'), ['', 'only a comment']);
});

test('sh blocks run every line; prompt blocks only their $ lines; other blocks nothing', () => {
  const page = parsePage(
    'p.md',
    [
      '<!-- docs-test: place workstation -->',
      '```sh',
      'tp connect            # a comment',
      '# a comment line',
      'tp-agent &',
      "tp intercept 'bad name!' --port 1:2   # fails: invalid workload name",
      'curl …                # illustrative',
      'curl -s x             # prints: laptop',
      'TP_A=1 \\',
      '  tp-agent',
      '```',
      '```',
      '$ tp status',
      'Connected to …',
      '```',
      '```yaml',
      'tp: not a command',
      '```',
    ].join('\n'),
  );
  assert.is(page.place, 'workstation');
  assert.equal(
    page.steps.map((s) => [s.kind, s.line, s.command]),
    [
      ['run', 3, 'tp connect'],
      ['background', 5, 'tp-agent'],
      ['fail', 6, "tp intercept 'bad name!' --port 1:2"],
      ['skip', 7, 'curl …'],
      ['run', 8, 'curl -s x'],
      ['run', 9, 'TP_A=1 tp-agent'],
      ['run', 13, 'tp status'],
    ],
  );
  assert.equal(page.steps[2], {
    kind: 'fail',
    line: 6,
    command: "tp intercept 'bad name!' --port 1:2",
    expect: 'invalid workload name',
  });
  assert.equal(page.steps[4], { kind: 'run', line: 8, command: 'curl -s x', expect: 'laptop' });
});

test('directives: skip, setup, then, cleanup, not-run apply where the page says', () => {
  const page = parsePage(
    'p.md',
    [
      '<!-- docs-test: skip your own cluster -->',
      '```sh',
      'tp helm install --set image.repository=registry.example.com/tp',
      '```',
      '<!-- docs-test: setup kubectl create namespace dev -->',
      '<!-- docs-test: cleanup kubectl delete namespace dev -->',
      '<!-- docs-test: not-run tp-lab down — the runner owns the lab -->',
      '```sh',
      'tp-lab status',
      'tp-lab down',
      '```',
      '<!-- docs-test: then test -f echo.env -->',
      '```sh',
      'tp-lab down',
      '```',
    ].join('\n'),
  );
  assert.equal(
    page.steps.map((s) => [s.kind, s.command, s.kind === 'skip' ? s.reason : '']),
    [
      ['skip', 'tp helm install --set image.repository=registry.example.com/tp', 'your own cluster'],
      ['hidden', 'kubectl create namespace dev', ''],
      ['run', 'tp-lab status', ''],
      ['skip', 'tp-lab down', 'the runner owns the lab'],
      ['hidden', 'test -f echo.env', ''],
      // not-run applies to its block only.
      ['run', 'tp-lab down', ''],
    ],
  );
  assert.equal(page.cleanup, ['kubectl delete namespace dev']);
});

test('a directive it does not know is an error, never a silent skip', () => {
  assert.throws(
    () => parsePage('p.md', '<!-- docs-test: skpi typo -->\n'),
    (e: Error) => e instanceof PageError,
  );
  assert.throws(() => parsePage('p.md', '<!-- docs-test: place laptop -->\n'), /host, workstation or netns/);
  assert.throws(() => parsePage('p.md', '<!-- docs-test: not-run tp-lab down -->\n'), /PREFIX — REASON/);
});

test("the project's pages parse, and each runs lines (none is skipped whole by mistake)", () => {
  const files = [
    'README.md',
    ...fs
      .readdirSync(path.join(repoRoot, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  const runs: Record<string, number> = {};
  for (const f of files) {
    const page = parsePage(f, fs.readFileSync(path.join(repoRoot, f), 'utf8'));
    runs[f] = page.steps.filter((s) => s.kind !== 'skip').length;
  }
  for (const f of [
    'docs/capture.md',
    'docs/foundation.md',
    'docs/kubernetes.md',
    'docs/lab.md',
    'docs/vif.md',
  ])
    assert.ok((runs[f] ?? 0) > 0, `${f} runs lines: ${JSON.stringify(runs)}`);
});

test.run();
