// test/run.mjs, the runner behind `npm test`, as a developer meets it: a test file that hangs is stopped
// with SIGTERM and cleans up (its exit handlers run, what it started goes with it), and a file that ends
// leaving a process behind has that process named and ended. Each case runs the real runner on a fixture
// tree of its own (TP_TEST_DIST), with a short per-file timeout.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../command/wait.js';
import { repoRoot } from './e2e/cluster.js';
import { isRunning } from './foundation/harness.js';

/** A fixture test file (CommonJS: the tree has no package.json) that starts `sleep` and notes its pid. */
function fixture(dir: string, name: string, body: string): void {
  fs.writeFileSync(
    path.join(dir, name),
    `const { spawn } = require('node:child_process');
const fs = require('node:fs');
const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
fs.writeFileSync(${JSON.stringify(path.join(dir, 'sleeper.pid'))}, String(sleeper.pid));
${body}
`,
  );
}

/** A fixture that never ends by itself; its exit handler leaves the file `cleaned` in `dir`. */
function hanging(dir: string, name: string): void {
  fixture(
    dir,
    name,
    `process.on('exit', () => fs.writeFileSync(${JSON.stringify(path.join(dir, 'cleaned'))}, 'yes'));
setInterval(() => {}, 1000);`,
  );
}

function runner(dir: string): { code: number | null; stdout: string; sleeper: number } {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'test', 'run.mjs')], {
    env: { ...process.env, TP_TEST_DIST: dir, TP_TEST_FILE_TIMEOUT_MS: '3000' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return {
    code: r.status,
    stdout: r.stdout,
    sleeper: Number(fs.readFileSync(path.join(dir, 'sleeper.pid'), 'utf8')),
  };
}

function scratch(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tp-runner-'));
}

test('a file that runs out of time gets SIGTERM: its exit handlers run, then what it started ends', () => {
  const dir = scratch();
  try {
    hanging(dir, 'hang.test.js');
    const r = runner(dir);
    assert.is(r.code, 1, r.stdout);
    assert.match(r.stdout, /hang\.test\.js: timed out after 3000 ms: stopping it/);
    assert.match(r.stdout, /Failed files:\n {2}hang\.test\.js/);
    assert.ok(fs.existsSync(path.join(dir, 'cleaned')), `the file's exit handler did not run:\n${r.stdout}`);
    assert.not.ok(isRunning(r.sleeper), `sleep (pid ${r.sleeper}), started by the file, still runs`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a file that ends leaving a process in its group: the runner names it and ends it', () => {
  const dir = scratch();
  try {
    fixture(dir, 'leak.test.js', `sleeper.unref();`);
    const r = runner(dir);
    assert.match(
      r.stdout,
      new RegExp(
        `leak\\.test\\.js left processes running in its group \\(${r.sleeper} sleep\\): killed them`,
      ),
    );
    assert.not.ok(isRunning(r.sleeper), `sleep (pid ${r.sleeper}) still runs`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGTERM to the runner: the running file cleans up, no further file starts', async () => {
  const dir = scratch();
  try {
    hanging(dir, 'a-hang.test.js');
    fs.writeFileSync(
      path.join(dir, 'b-next.test.js'),
      `require('node:fs').writeFileSync(${JSON.stringify(path.join(dir, 'next-started'))}, 'yes');`,
    );
    const run = spawn(process.execPath, [path.join(repoRoot, 'test', 'run.mjs')], {
      env: { ...process.env, TP_TEST_DIST: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    run.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    const exited = new Promise<number | null>((r) => run.on('exit', (code) => r(code)));
    const pidFile = path.join(dir, 'sleeper.pid');
    await waitFor('the first file to start', () => fs.existsSync(pidFile), 20_000);
    const sleeper = Number(fs.readFileSync(pidFile, 'utf8'));
    run.kill('SIGTERM');
    assert.is(await exited, 143, stdout);
    assert.match(stdout, /SIGTERM: stopping the running test file/);
    assert.ok(fs.existsSync(path.join(dir, 'cleaned')), `the file's exit handler did not run:\n${stdout}`);
    assert.not.ok(isRunning(sleeper), `sleep (pid ${sleeper}), started by the file, still runs`);
    assert.not.ok(fs.existsSync(path.join(dir, 'next-started')), `the next file started:\n${stdout}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
