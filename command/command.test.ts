// The one runner against real processes: output and exit status, input on stdin, a failure that names
// the command and what it printed, a missing binary named with its package, and the timeout.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../netaddr/parse.js';
import { CommandError, onPath, runCommand } from './command.js';

test('stdout, stderr and the exit status come back; stdin is fed', async () => {
  const r = await runCommand(['sh', '-c', 'cat; echo err >&2'], { input: 'hello\n' });
  assert.equal(r, { code: 0, stdout: 'hello\n', stderr: 'err\n' });
});

test('a non-zero exit throws CommandError with the command line and the last lines it printed', async () => {
  try {
    await runCommand(['sh', '-c', 'echo one >&2; echo two >&2; exit 3']);
    assert.unreachable('should have thrown');
  } catch (e) {
    assert.instance(e, CommandError);
    const err = e as CommandError;
    assert.is(err.result.code, 3);
    assert.match(err.message, '`sh -c echo one >&2; echo two >&2; exit 3` failed (exit 3):\n  one\n  two');
  }
});

test('check: false returns the failure instead', async () => {
  const r = await runCommand(['sh', '-c', 'exit 4'], { check: false });
  assert.is(r.code, 4);
});

test('a binary that is not installed is a UsageError naming the package, for whoever needs it', async () => {
  try {
    await runCommand(['iptables-restore-not-here']);
    assert.unreachable('should have thrown');
  } catch (e) {
    assert.instance(e, UsageError);
    assert.match((e as Error).message, 'tp needs `iptables-restore-not-here`, which is not installed');
  }
  const lab = await runCommand(['/nonexistent/ip'], { who: 'the lab' }).catch((e: Error) => e.message);
  assert.is(
    lab,
    'the lab needs `/nonexistent/ip`, which is not installed: install it (apt-get install iproute2) and run again',
  );
});

test('the timeout kills the command and says so', async () => {
  const r = await runCommand(['sleep', '30'], { timeoutMs: 200, check: false });
  assert.is(r.code, 128);
  assert.match(r.stderr, 'sleep: killed by SIGKILL');
});

test('onPath finds installed tools only', () => {
  assert.ok(onPath('sh'));
  assert.not.ok(onPath('no-such-tool-here'));
});

test.run();
