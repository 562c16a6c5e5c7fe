import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnOnSocket } from './process-socket.js';

test("a child's stdin/stdout as a socket: bytes both ways, its end is the socket's end", async () => {
  const p = await spawnOnSocket('cat', []);
  const got = new Promise<string>((resolve) => {
    let text = '';
    p.socket.on('data', (d) => {
      text += d;
    });
    p.socket.on('end', () => resolve(text));
  });
  p.socket.end('hello');
  assert.is(await got, 'hello');
});

test('a reset (what a flow does when the far side resets) destroys the socket instead of throwing', async () => {
  const p = await spawnOnSocket('cat', []);
  const exited = new Promise((resolve) => p.child.once('exit', resolve));
  p.socket.resetAndDestroy();
  assert.ok(p.socket.destroyed);
  await exited;
});

test('a command that does not exist: the socket ends, stderr says why', async () => {
  const p = await spawnOnSocket('/nonexistent/tp-no-such-command', []);
  await new Promise((resolve) => p.socket.once('close', resolve));
  assert.match(p.stderr(), /ENOENT/);
});

test.run();
