// The kernel NAT map's key and value, byte for byte as bpf/tp_vif.bpf.c lays out struct tp_vif_key and
// struct tp_vif_rewrite (the program itself runs in the root daemon's netns test).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ipToBytes } from '../netaddr/parse.js';
import { notRoot, requirementSuite } from '../testbed/suite.js';
import { KEY_BYTES, KernelNat, natKey, natValue, VALUE_BYTES } from './kernel-nat.js';

test('an IPv4 key: addresses in the first 4 bytes of their 16, ports in network order, family 4', () => {
  const key = natKey(ipToBytes('198.18.0.1'), 50000, ipToBytes('10.96.0.10'), 80);
  assert.is(key.length, KEY_BYTES);
  assert.is(key.toString('hex'), `c6120001${'00'.repeat(12)}0a60000a${'00'.repeat(12)}c350005004000000`);
});

test('an IPv6 key: 16-byte addresses, family 6', () => {
  const key = natKey(ipToBytes('fd00::1'), 1, ipToBytes('fd10:244::5'), 8080);
  assert.is(key.subarray(0, 16).toString('hex'), 'fd000000000000000000000000000001');
  assert.is(key.subarray(16, 32).toString('hex'), 'fd100244000000000000000000000005');
  assert.is(key.subarray(32).toString('hex'), '00011f9006000000');
});

test('a value packs the new addresses (IPv4: 4 + 4 bytes), the ports at byte 32', () => {
  const v4 = natValue({
    src: ipToBytes('198.18.0.5'),
    srcPort: 1024,
    dst: ipToBytes('198.18.0.1'),
    dstPort: 40001,
  });
  assert.is(v4.length, VALUE_BYTES);
  assert.is(v4.toString('hex'), `c6120005c6120001${'00'.repeat(24)}04009c41`);
  const v6 = natValue({ src: ipToBytes('fd10:244::5'), srcPort: 80, dst: ipToBytes('fd00::1'), dstPort: 2 });
  assert.is(
    v6.subarray(0, 32).toString('hex'),
    'fd100244000000000000000000000005fd000000000000000000000000000001',
  );
  assert.is(v6.subarray(32).toString('hex'), '00500002');
});

test('a missing program file: the error names it and how to build it', () => {
  assert.throws(
    () => KernelNat.attach('tp0', '/nonexistent/tp_vif.bpf.o'),
    /\/nonexistent\/tp_vif\.bpf\.o is missing: build it with `node build\.mjs` \(needs clang, libbpf-dev\)/,
  );
});

test.run();

const root = requirementSuite('the kernel NAT with the BPF API', notRoot('loading BPF programs'));
root.test('an interface that does not exist: the error names it', () => {
  assert.throws(() => KernelNat.attach('tp-no-such-if'), /interface tp-no-such-if not found/);
});
root.test.run();
