import { spawn } from 'node:child_process';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../../../logging/logger.js';
import { SpdyTestClient } from '../test/spdy-client.js';
import { type ExecOptions, expectedStreams, parseExecOptions, resultMessage, serveExec } from './exec.js';
import { SpdySession } from './spdy-session.js';

const log = createLogger('test');
setLevel('warn');

test('query parameters as the API server sends them', () => {
  const q = new URLSearchParams('command=sh&command=-c&command=echo+hi&input=1&output=1&error=1&tty=0');
  assert.equal(parseExecOptions(q), {
    command: ['sh', '-c', 'echo hi'],
    stdin: true,
    stdout: true,
    stderr: true,
    tty: false,
  });
  assert.equal(parseExecOptions(new URLSearchParams('output=1')), { error: 'you must specify a command' });
  assert.match(
    JSON.stringify(parseExecOptions(new URLSearchParams('command=ls'))),
    /at least 1 of stdin, stdout, stderr/,
  );
});

test('expected streams: no stderr with a TTY, resize only from v3 on', () => {
  const o: ExecOptions = { command: ['x'], stdin: true, stdout: true, stderr: true, tty: false };
  assert.equal([...expectedStreams(o, 'v4.channel.k8s.io')].sort(), ['error', 'stderr', 'stdin', 'stdout']);
  const tty = { ...o, tty: true };
  assert.equal([...expectedStreams(tty, 'v4.channel.k8s.io')].sort(), ['error', 'resize', 'stdin', 'stdout']);
  assert.equal([...expectedStreams(tty, 'v2.channel.k8s.io')].sort(), ['error', 'stdin', 'stdout']);
});

test('v4 status: Success, NonZeroExitCode with the code as cause, signals as 128+n', () => {
  assert.equal(JSON.parse(resultMessage({ exitCode: 0 }, 'v4.channel.k8s.io')!), {
    metadata: {},
    status: 'Success',
  });
  const failed = JSON.parse(resultMessage({ exitCode: 3 }, 'v4.channel.k8s.io')!);
  assert.is(failed.reason, 'NonZeroExitCode');
  assert.equal(failed.details.causes, [{ reason: 'ExitCode', message: '3' }]);
  const killed = JSON.parse(resultMessage({ signal: 'SIGKILL' }, 'v4.channel.k8s.io')!);
  assert.equal(killed.details.causes[0].message, '137');
  assert.is(resultMessage({ exitCode: 0 }, 'v3.channel.k8s.io'), undefined);
  assert.match(resultMessage({ exitCode: 2 }, 'v3.channel.k8s.io')!, /non-zero exit code: exit status 2/);
});

async function execSession(options: ExecOptions) {
  const kubelet = net.createServer((socket) => {
    const session = new SpdySession(socket, { log });
    serveExec(
      session,
      'v4.channel.k8s.io',
      options,
      (command) => spawn(command[0]!, command.slice(1), { detached: true, stdio: ['pipe', 'pipe', 'pipe'] }),
      log,
    );
  });
  await new Promise<void>((resolve) => kubelet.listen(0, '127.0.0.1', resolve));
  const socket = net.connect((kubelet.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  return { client: new SpdyTestClient(socket), close: () => kubelet.close() };
}

test('exec: stdin in, stdout and stderr out, then the exit status, then the connection closes', async () => {
  const options: ExecOptions = {
    command: ['sh', '-c', 'read line; echo "out:$line"; echo err >&2; exit 3'],
    stdin: true,
    stdout: true,
    stderr: true,
    tty: false,
  };
  const e = await execSession(options);
  try {
    const error = await e.client.openStream({ streamtype: 'error' });
    const stdin = await e.client.openStream({ streamtype: 'stdin' });
    const stdout = await e.client.openStream({ streamtype: 'stdout' });
    const stderr = await e.client.openStream({ streamtype: 'stderr' });
    stdin.write('hello\n', true);
    await Promise.all([stdout.closed(), stderr.closed(), error.closed()]);
    assert.is(stdout.text, 'out:hello\n');
    assert.is(stderr.text, 'err\n');
    const status = JSON.parse(error.text);
    assert.is(status.reason, 'NonZeroExitCode');
    assert.is(status.details.causes[0].message, '3');
    await e.client.whenClosed();
    assert.ok(e.client.goAway, 'GOAWAY before the connection closes');
  } finally {
    e.client.destroy();
    e.close();
  }
});

test('exec: a command that cannot start is an InternalError status, not a hang', async () => {
  const e = await execSession({
    command: ['/nonexistent/tool'],
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
  });
  try {
    const error = await e.client.openStream({ streamtype: 'error' });
    const stdout = await e.client.openStream({ streamtype: 'stdout' });
    const stderr = await e.client.openStream({ streamtype: 'stderr' });
    await Promise.all([error.closed(), stdout.closed(), stderr.closed()]);
    const status = JSON.parse(error.text);
    assert.is(status.status, 'Failure');
    assert.match(status.message, /ENOENT/);
  } finally {
    e.client.destroy();
    e.close();
  }
});

test.run();
