// Every bin in package.json starts Node so that what follows belongs to tp (issue 20): Node 20 reads
// `--env-file` anywhere on its command line, also after the script, and fails before tp runs. Each bin
// is run the way a user runs it (the file itself, through its shebang) with Node's own flags as
// arguments; tp, not Node, must answer.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { repoRoot } from './e2e/cluster.js';

const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
};

/** What Node itself prints when it takes one of these flags (none of it may appear). */
const NODE_ANSWERS = [/^node: /m, /Debugger listening on/, /Cannot find module '\/nonexistent/, /bad option/];

for (const [name, file] of Object.entries(pkg.bin)) {
  for (const flags of [
    ['--env-file', '/nonexistent/tp-test.env'],
    ['--inspect'],
    ['--require', '/nonexistent/tp.js'],
  ]) {
    test(`${name} ${flags.join(' ')}: tp answers, not Node`, () => {
      const bin = path.join(repoRoot, file);
      assert.ok(fs.statSync(bin).mode & 0o100, `${file} is executable`);
      assert.match(fs.readFileSync(bin, 'utf8').split('\n')[0]!, /^#!\/usr\/bin\/env -S node --$/);
      // The agent reads only its environment: give it none, so it stops at once, naming what is missing.
      const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', TP_LOG_LEVEL: 'error' };
      const r = spawnSync(bin, flags, { env, encoding: 'utf8', timeout: 30_000 });
      const out = `${r.stdout}${r.stderr}`;
      for (const pattern of NODE_ANSWERS)
        assert.not.match(out, pattern, `${name} ${flags.join(' ')}: ${out}`);
      assert.is.not(r.status, 9, 'exit 9 is Node refusing its own option');
      assert.is.not(r.status, null, `${name} ended by a signal (${r.signal}): ${out}`);
      assert.ok(out.trim().length > 0, `${name} said something: the flag was seen by ${name} itself`);
    });
  }
}

// Input is checked before anything is printed or sent (issue 20): with no daemon to talk to, a bad name
// is still the one error; a check made after contacting the daemon would say "not connected" instead.
for (const [args, error] of [
  [
    ['intercept', 'bad name!', '--port', '1:2'],
    /^tp intercept: invalid workload name "bad name!": a DNS-1123 name/,
  ],
  [['intercept', 'echo', '-n', 'Dev', '--port', '1:2'], /^tp intercept: invalid namespace "Dev"/],
  [
    ['intercept', 'echo', '--port', '1:2', '--env-file', '/nonexistent/dir/e.env'],
    /^tp intercept: --env-file \/nonexistent\/dir\/e.env: the directory \/nonexistent\/dir does not exist/,
  ],
  [
    ['intercept', 'echo', '--port', '1:2', '--env-json', '/'],
    /^tp intercept: --env-json \/: that is a directory/,
  ],
  [['leave', 'Bad_Name'], /^tp leave: invalid intercept name "Bad_Name"/],
  [
    ['intercept', 'echo', '--port', '1:2', 'npm', 'start'],
    /^tp intercept: unexpected argument "npm" after the workload: to run a command with the intercept, put it after --/,
  ],
  [
    ['intercept', 'echo', '--port', '1:2', '--', 'tp-no-such-program', '--port', '3'],
    /^tp intercept: cannot run "tp-no-such-program": not found on PATH/,
  ],
  [['ingest', 'echo', '--'], /^tp ingest: nothing after --: give the command to run, or leave -- out/],
  [
    ['loglevel', 'verbose'],
    /^tp loglevel: unknown log level "verbose": use one of error, warn, info, debug, trace/,
  ],
  [
    ['loglevel', 'debug', '--duration', '2d'],
    /^tp loglevel: invalid --duration "2d": expected a duration such as 15s/,
  ],
] as const) {
  test(`tp ${args.join(' ')}: one clear error, nothing else, before the daemon`, () => {
    const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-bins-'));
    try {
      const r = spawnSync(path.join(repoRoot, pkg.bin.tp!), args, {
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', TP_RUN_DIR: runDir },
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.is(r.status, 1, r.stderr);
      assert.is(r.stdout, '');
      assert.is(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, error);
      assert.equal(fs.readdirSync(runDir), [], 'no daemon started, no socket');
    } finally {
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });
}

test.run();
