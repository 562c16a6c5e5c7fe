import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PersistentAddressPool, PodAddressPool } from './ipam.js';

test('the bridge takes the first address; pods get the rest, round-robin, never network or broadcast', () => {
  const pool = new PodAddressPool('10.244.0.0/29');
  assert.is(pool.gateway, '10.244.0.1');
  const ips = ['a', 'b', 'c', 'd', 'e'].map((o) => pool.allocate(o));
  assert.equal(ips, ['10.244.0.2', '10.244.0.3', '10.244.0.4', '10.244.0.5', '10.244.0.6']);
  assert.throws(() => pool.allocate('f'), /exhausted/);
  assert.is(pool.allocate('c'), '10.244.0.4', 'an owner keeps its address');
  pool.release('b');
  assert.is(pool.allocate('g'), '10.244.0.3');
});

test('a freed address is not handed out again at once', () => {
  const pool = new PodAddressPool('10.244.0.0/24');
  const first = pool.allocate('a');
  pool.release('a');
  assert.is.not(pool.allocate('b'), first);
});

test('allocations survive a restart; a different CIDR starts over; bad CIDRs are refused', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-ipam-'));
  try {
    const file = path.join(dir, 'ipam.json');
    const p1 = PersistentAddressPool.open(file, '10.244.0.0/24');
    const ip = p1.allocate('pod-uid');
    const p2 = PersistentAddressPool.open(file, '10.244.0.0/24');
    assert.is(p2.pool.addressOf('pod-uid'), ip);
    assert.is(PersistentAddressPool.open(file, '10.244.1.0/24').pool.addressOf('pod-uid'), undefined);
    assert.throws(() => new PodAddressPool('fd00::/64'), /IPv4 only/);
    assert.throws(() => new PodAddressPool('10.0.0.0/31'), /too small/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
