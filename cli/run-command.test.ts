import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  commandAfterDashes,
  commandEnvironment,
  exitStatus,
  findProgram,
  runCommand,
} from './run-command.js';

test('-- COMMAND: taken only after --; a stray operand or an empty command is refused with the fix', () => {
  assert.is(commandAfterDashes('intercept', [], ['echo', '--port', '8080']), undefined);
  assert.equal(commandAfterDashes('intercept', ['npm', 'start'], ['echo', '--', 'npm', 'start']), [
    'npm',
    'start',
  ]);
  assert.throws(
    () => commandAfterDashes('intercept', ['npm'], ['echo', 'npm', '--port', '8080']),
    /unexpected argument "npm" after the workload: to run a command with the intercept, put it after --/,
  );
  assert.throws(() => commandAfterDashes('ingest', [], ['echo', '--']), /nothing after --/);
});

test('the command is looked up on the workstation PATH before anything is created', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-run-'));
  try {
    const script = path.join(dir, 'serve');
    fs.writeFileSync(script, '#!/bin/sh\n', { mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'data'), 'x', { mode: 0o644 });
    assert.is(findProgram('serve', { PATH: `/nonexistent${path.delimiter}${dir}` }), script);
    assert.is(findProgram(script), script);
    assert.throws(
      () => findProgram('serve', { PATH: '/nonexistent' }),
      /cannot run "serve": not found on PATH/,
    );
    assert.throws(() => findProgram('data', { PATH: dir }), /not found on PATH/);
    assert.throws(() => findProgram(path.join(dir, 'data')), /is not an executable file/);
    assert.throws(() => findProgram(dir), /is not an executable file/);
    assert.throws(() => findProgram(path.join(dir, 'nope')), /no such file/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the command's environment: the container's values win, the workstation's PATH stays", () => {
  const env = commandEnvironment(
    { PATH: '/usr/bin', HOME: '/home/dev', DB: 'localhost' },
    { DB: 'db.prod:5432', PATH: '/app/bin', TP_ROOT: '/tmp/mnt' },
  );
  assert.equal(env, { PATH: '/usr/bin', HOME: '/home/dev', DB: 'db.prod:5432', TP_ROOT: '/tmp/mnt' });
});

test('exit status as a shell gives it: the code, or 128 + the signal', () => {
  assert.is(exitStatus(0, null), 0);
  assert.is(exitStatus(7, null), 7);
  assert.is(exitStatus(null, 'SIGTERM'), 143);
  assert.is(exitStatus(null, 'SIGKILL'), 137);
});

test('runCommand: the status of the command, its environment, 127 for a program that is not there', async () => {
  const quiet = { ...process.env, FOO: 'bar' };
  assert.is(await runCommand(['sh', '-c', 'exit 7'], quiet), 7);
  assert.is(await runCommand(['sh', '-c', 'test "$FOO" = bar'], quiet), 0);
  const stderr = process.stderr.write;
  let said = '';
  process.stderr.write = ((s: string) => {
    said += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    assert.is(await runCommand(['/nonexistent/tp-no-such-program'], quiet), 127);
  } finally {
    process.stderr.write = stderr;
  }
  assert.match(said, /cannot run "\/nonexistent\/tp-no-such-program"/);
});

// A process that runs a command the way `tp intercept … -- CMD` does, and prints the status it got.
const holder = `
const { runCommand } = await import(${JSON.stringify(new URL('./run-command.js', import.meta.url).href)});
const status = await runCommand(['sh', '-c', process.argv[1]], process.env);
console.log('status ' + status);
`;

for (const signal of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
  test(`${signal} to tp (no terminal) reaches the command; tp waits for it and reports its status`, async () => {
    const trap = `trap 'exit 42' ${signal.slice(3)}; echo ready; while :; do sleep 0.1; done`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', holder, trap], {
      stdio: ['ignore', 'pipe', 'inherit'],
      cwd: path.dirname(fileURLToPath(import.meta.url)),
    });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (d.includes('ready')) child.kill(signal);
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.is(code, 0, out);
    assert.match(out, /status 42/);
  });
}

test.run();
