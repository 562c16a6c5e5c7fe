import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ipToBytes } from '../netaddr/parse.js';
import { NatExhaustedError, NatTable } from './nat-table.js';
import { flowKeyOf } from './packet.js';

const client = ipToBytes('198.18.0.1');
const target = ipToBytes('10.96.0.10');

function table(now: { t: number }, fakes = ['198.18.0.2', '198.18.0.3'], lastPort = 65535) {
  return new NatTable<string>({
    fakeAddresses: fakes.map(ipToBytes),
    firstPort: 1024,
    lastPort,
    lingerMs: 10_000,
    reuseDelayMs: 70_000,
    now: () => now.t,
  });
}

test('gives each flow its own fake peer and finds it both ways', () => {
  const now = { t: 0 };
  const nat = table(now);
  const seen = new Set<string>();
  for (let port = 40000; port < 40100; port++) {
    const key = flowKeyOf(client, port, target, 80);
    const e = nat.add(key, client, port, target, 80, `flow ${port}`);
    const fake = `${e.fake.join('.')}:${e.fakePort}`;
    assert.not.ok(seen.has(fake), 'fake peers are unique');
    seen.add(fake);
    assert.is(nat.get(key), e);
    assert.is(nat.getByFake(e.fake, e.fakePort), e);
    assert.is(nat.getByFakeText(e.fake.toString('latin1'), e.fakePort), e);
  }
  assert.is(nat.size, 100);
});

test('a closed flow lingers, then its fake peer cools down before reuse', () => {
  const now = { t: 1_000 };
  // One fake address and two ports: reuse is forced quickly.
  const nat = table(now, ['198.18.0.2'], 1025);
  const a = nat.add('a', client, 1, target, 80, 'a');
  const b = nat.add('b', client, 2, target, 80, 'b');
  assert.throws(
    () => nat.add('c', client, 3, target, 80, 'c'),
    (e: unknown) => e instanceof NatExhaustedError,
  );
  nat.close(a);
  now.t += 9_999;
  assert.equal(nat.sweep(), []);
  assert.is(nat.get('a'), a, 'still there for late FIN/ACKs');
  now.t += 1;
  assert.equal(nat.sweep(), [a]);
  assert.is(nat.get('a'), undefined);
  assert.is(nat.getByFake(a.fake, a.fakePort), undefined);
  assert.throws(() => nat.add('c', client, 3, target, 80, 'c'), /cooling down/);
  now.t = 1_000 + 70_000;
  const c = nat.add('c', client, 3, target, 80, 'c');
  assert.is(c.fakePort, a.fakePort, 'the fake peer is reused once cooled down');
  assert.is(nat.get('b'), b);
});

test('a refused flow frees its fake peer at once; a new SYN replaces a lingering flow', () => {
  const now = { t: 0 };
  const nat = table(now, ['198.18.0.2'], 1024);
  const a = nat.add('a', client, 1, target, 80, 'a');
  nat.remove(a, true);
  const b = nat.add('b', client, 2, target, 80, 'b');
  assert.is(b.fakePort, a.fakePort);
  nat.close(b);
  assert.throws(() => nat.add('b2', client, 2, target, 81, 'b2'), /in use or cooling down/);
  const nat2 = table(now);
  const first = nat2.add('k', client, 1, target, 80, 'first');
  nat2.close(first);
  const second = nat2.add('k', client, 1, target, 80, 'second');
  assert.is(nat2.get('k'), second);
  assert.is(nat2.getByFake(first.fake, first.fakePort), undefined);
  assert.is.not(`${second.fake.join('.')}:${second.fakePort}`, `${first.fake.join('.')}:${first.fakePort}`);
});

test.run();
