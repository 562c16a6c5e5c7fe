import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../netaddr/parse.js';
import {
  kernelHasSkLookup,
  kernelVersion,
  missingCapabilities,
  planPortChanges,
  validateCaptureConfig,
} from './capture-config.js';

const usage = (pattern: RegExp) => (e: unknown) => e instanceof UsageError && pattern.test(e.message);

test('a valid config gets defaults and sorted ports', () => {
  assert.equal(validateCaptureConfig({ ports: [9090, 8080] }), {
    ports: [8080, 9090],
    netnsPath: '/proc/self/ns/net',
    pinRoot: '/sys/fs/bpf/tp',
  });
  assert.equal(
    validateCaptureConfig({ ports: [80], netnsPath: '/run/netns/pod', pinRoot: '/sys/fs/bpf/x/' }).pinRoot,
    '/sys/fs/bpf/x',
  );
});

test('a config that cannot work is refused with the fix', () => {
  assert.throws(() => validateCaptureConfig({ ports: [] }), usage(/no ports to capture.*--ports/));
  assert.throws(() => validateCaptureConfig({ ports: [0] }), usage(/invalid port 0/));
  assert.throws(() => validateCaptureConfig({ ports: [70000] }), usage(/1 to 65535/));
  assert.throws(() => validateCaptureConfig({ ports: [80, 80] }), usage(/names a port twice/));
  const many = Array.from({ length: 65 }, (_, i) => 1000 + i);
  assert.throws(() => validateCaptureConfig({ ports: many }), usage(/at most 64.*iptables/));
  assert.throws(
    () => validateCaptureConfig({ ports: [80], netnsPath: 'ns/net' }),
    usage(/must be an absolute path/),
  );
  assert.throws(() => validateCaptureConfig({ ports: [80], pinRoot: 'tp' }), usage(/absolute/));
});

test('port changes: only what differs', () => {
  assert.equal(planPortChanges([8080, 9090], [9090, 8080]), { add: [], remove: [] });
  assert.equal(planPortChanges([8080], [8080, 9090, 81]), { add: [81, 9090], remove: [] });
  assert.equal(planPortChanges([8080, 9090], [9090]), { add: [], remove: [8080] });
  assert.equal(planPortChanges([], [1]), { add: [1], remove: [] });
});

test('sk_lookup needs Linux 5.9', () => {
  assert.equal(kernelVersion('6.1.0-18-amd64'), [6, 1]);
  assert.is(kernelVersion('unknown'), undefined);
  assert.ok(kernelHasSkLookup('5.9.0'));
  assert.ok(kernelHasSkLookup('5.10.0-28-cloud-amd64'));
  assert.ok(kernelHasSkLookup('6.18.44-fc-v657'));
  assert.not.ok(kernelHasSkLookup('5.8.18'));
  assert.not.ok(kernelHasSkLookup('4.19.0-26-amd64'));
  assert.not.ok(kernelHasSkLookup('garbage'));
});

test('capabilities: CAP_NET_ADMIN plus CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), CAP_CHOWN to hand over the maps', () => {
  const set = (...bits: bigint[]) => bits.reduce((a, b) => a | (1n << b), 0n).toString(16);
  assert.equal(missingCapabilities('000001ffffffffff', { chown: true }), []); // root
  assert.equal(missingCapabilities(set(12n, 39n, 38n)), []);
  assert.equal(missingCapabilities(set(12n, 21n)), []);
  // What runc grants for capabilities: {add: [NET_ADMIN, NET_RAW, BPF]}: the verifier refuses the program.
  assert.equal(missingCapabilities(set(12n, 13n, 39n)), ['CAP_PERFMON (or CAP_SYS_ADMIN)']);
  assert.equal(missingCapabilities(set(12n, 13n, 38n, 39n), { chown: true }), [
    "CAP_CHOWN (to give the agent's UID its maps)",
  ]);
  assert.equal(missingCapabilities(set(0n, 12n, 13n, 38n, 39n), { chown: true }), []);
  assert.equal(missingCapabilities(set(12n)), [
    'CAP_BPF (or CAP_SYS_ADMIN)',
    'CAP_PERFMON (or CAP_SYS_ADMIN)',
  ]);
  assert.equal(missingCapabilities('0000000000000000'), [
    'CAP_NET_ADMIN',
    'CAP_BPF (or CAP_SYS_ADMIN)',
    'CAP_PERFMON (or CAP_SYS_ADMIN)',
  ]);
});

test.run();
