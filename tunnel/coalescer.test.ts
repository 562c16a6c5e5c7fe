import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Coalescer } from './coalescer.js';

test('chunks of one turn become one message', () => {
  const c = new Coalescer(1024);
  assert.equal(c.push(Buffer.from('abc')), []);
  assert.equal(c.push(Buffer.from('def')), []);
  assert.is(c.pendingBytes, 6);
  assert.is(c.take()!.toString(), 'abcdef');
  assert.is(c.take(), undefined);
});

test('a message never exceeds the cap and no byte is lost or reordered', () => {
  const c = new Coalescer(10);
  const input = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
  const out: Buffer[] = [];
  out.push(...c.push(input.subarray(0, 4)));
  out.push(...c.push(input.subarray(4, 27)));
  out.push(...c.push(input.subarray(27)));
  const rest = c.take();
  if (rest) out.push(rest);
  for (const m of out) assert.ok(m.length <= 10, `message of ${m.length} bytes`);
  assert.is(Buffer.concat(out).toString(), input.toString());
  assert.equal(
    out.map((m) => m.length),
    [10, 10, 10, 6],
  );
});

test('a single chunk is passed on without a copy', () => {
  const c = new Coalescer(100);
  const chunk = Buffer.from('hello');
  c.push(chunk);
  assert.is(c.take(), chunk);
});

test.run();
