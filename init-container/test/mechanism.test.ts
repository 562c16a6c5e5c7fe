// The pure choices behind tp-init's one mechanism interface: which mechanism apply runs (and why it fell
// back), what cleanup removes, and how `tp-init status` without flags combines what each one found.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ebpfMechanism } from '../../bpf/capture-mechanism.js';
import { UsageError } from '../../netaddr/parse.js';
import {
  type CaptureMechanism,
  chooseMechanism,
  cleanupOrder,
  combineStatus,
  type Found,
  type MechanismStatus,
} from '../mechanism.js';

const supported = { supported: true, reason: 'Linux 6.8 supports sk_lookup; bpffs at /sys/fs/bpf' };
const noKernel = {
  supported: false,
  reason: 'Linux 5.4.0-150-generic has no sk_lookup programs (they need Linux 5.9 or later)',
};

test('apply: the requested mechanism when it is supported, or when it has nothing to probe', () => {
  assert.equal(chooseMechanism('ebpf', supported), { use: 'ebpf' });
  assert.equal(chooseMechanism('iptables', undefined), { use: 'iptables' });
  assert.equal(chooseMechanism('iptables', supported), { use: 'iptables' });
});

test('apply: eBPF not available falls back to iptables, and the warning says why', () => {
  assert.equal(chooseMechanism('ebpf', noKernel), {
    use: 'iptables',
    fallback:
      'eBPF capture is not available: Linux 5.4.0-150-generic has no sk_lookup programs (they need Linux 5.9 or later); falling back to iptables',
  });
  const noCaps = {
    supported: false,
    reason: 'the process lacks CAP_BPF and CAP_PERFMON: give the container …',
  };
  assert.match(
    chooseMechanism('ebpf', noCaps).fallback ?? '',
    /lacks CAP_BPF and CAP_PERFMON.*falling back to iptables$/,
  );
});

test('apply: iptables has no fallback: not available is an error naming the reason', () => {
  assert.throws(
    () => chooseMechanism('iptables', { supported: false, reason: 'no iptables binary found on PATH' }),
    (e: Error) =>
      e instanceof UsageError && /^iptables capture is not available: no iptables binary/.test(e.message),
  );
});

test("the eBPF mechanism's own probe, on this machine, with no bpffs at its pin root: a fallback with the reason", async () => {
  const ebpf: CaptureMechanism = ebpfMechanism({ pinRoot: '/tmp/tp-no-bpffs-here/tp' });
  const support = await ebpf.probeSupport!({ appPorts: [8080], agentUid: 7777 });
  assert.is(support.supported, false);
  const choice = chooseMechanism('ebpf', support);
  assert.is(choice.use, 'iptables');
  // Whichever check fails first here (kernel, capabilities, bpffs), the warning carries it.
  assert.match(choice.fallback ?? '', /^eBPF capture is not available: .+; falling back to iptables$/);
  assert.ok(choice.fallback?.includes(support.reason));
});

test('the eBPF mechanism refuses --ports "*" outright: no fallback, a usage error', async () => {
  const ebpf: CaptureMechanism = ebpfMechanism({ pinRoot: '/tmp/tp-no-bpffs-here/tp' });
  try {
    await ebpf.probeSupport!({ appPorts: 'all', agentUid: 7777 });
    assert.unreachable('probeSupport accepted --ports "*"');
  } catch (e) {
    assert.instance(e, UsageError);
    assert.match((e as Error).message, /--ports "\*" needs --mechanism iptables/);
  }
});

test('cleanup: eBPF also removes what a fallback to iptables installed; iptables only its own', () => {
  assert.equal(cleanupOrder('ebpf'), ['ebpf', 'iptables']);
  assert.equal(cleanupOrder('iptables'), ['iptables']);
});

const none = (text: string): MechanismStatus => ({
  found: false,
  inPlace: false,
  text,
  json: { empty: true },
});
const placed = (text: string, inPlace = true): MechanismStatus => ({
  found: true,
  inPlace,
  text,
  json: { text },
});
const NO_RULES = 'no tp capture rules: …\n';
const NO_PINS = 'eBPF capture: not applied in network namespace 1 (nothing pinned at /sys/fs/bpf/tp/1)\n';

test('status: iptables in place, no eBPF: in place, only the iptables report, eBPF null', () => {
  const found: Found[] = [
    { name: 'iptables', status: placed('IPv4 (nft backend): in place\ncapture is in place\n') },
    { name: 'ebpf', status: none(NO_PINS) },
  ];
  assert.equal(combineStatus(found), {
    inPlace: true,
    text: 'IPv4 (nft backend): in place\ncapture is in place\n',
    json: {
      inPlace: true,
      iptables: { text: 'IPv4 (nft backend): in place\ncapture is in place\n' },
      ebpf: null,
    },
  });
});

test('status: eBPF attached, no iptables rules: in place, only the eBPF report', () => {
  const r = combineStatus([
    { name: 'iptables', status: none(NO_RULES) },
    { name: 'ebpf', status: placed('eBPF capture: attached\n') },
  ]);
  assert.equal(r, {
    inPlace: true,
    text: 'eBPF capture: attached\n',
    json: { inPlace: true, iptables: null, ebpf: { text: 'eBPF capture: attached\n' } },
  });
});

test('status: nothing anywhere: not in place, each mechanism says so', () => {
  const r = combineStatus([
    { name: 'iptables', status: none(NO_RULES) },
    { name: 'ebpf', status: none(NO_PINS) },
  ]);
  assert.equal(r, {
    inPlace: false,
    text: NO_RULES + NO_PINS,
    json: { inPlace: false, iptables: null, ebpf: null },
  });
});

test('status: one found with drift: not in place', () => {
  const r = combineStatus([
    { name: 'iptables', status: placed('drift\n', false) },
    { name: 'ebpf', status: placed('attached\n') },
  ]);
  assert.is('inPlace' in r && r.inPlace, false);
});

test('status: no permission and nothing found: cannot read (exit 2), with the reason', () => {
  const reason = 'reading the nft rules: permission denied';
  assert.equal(
    combineStatus([
      {
        name: 'iptables',
        unreadable: { error: `${reason}: tp-init needs the NET_ADMIN …`, permission: reason },
      },
      { name: 'ebpf', status: none(NO_PINS) },
    ]),
    { cannotRead: reason },
  );
  assert.equal(
    combineStatus([
      { name: 'iptables', unreadable: { error: 'x', permission: reason } },
      { name: 'ebpf', unreadable: { error: 'Operation not permitted' } },
    ]),
    { cannotRead: reason },
  );
});

test('status: unreadable for another reason: reported, not in place; other mechanisms still shown', () => {
  const r = combineStatus([
    { name: 'iptables', status: placed('capture is in place\n') },
    { name: 'ebpf', unreadable: { error: 'libbpf.so.1 is missing' } },
  ]);
  assert.equal(r, {
    inPlace: false,
    text: 'capture is in place\neBPF: cannot read: libbpf.so.1 is missing\n',
    json: {
      inPlace: false,
      iptables: { text: 'capture is in place\n' },
      ebpf: { error: 'libbpf.so.1 is missing' },
    },
  });
  const onlyError = combineStatus([
    { name: 'iptables', unreadable: { error: 'no iptables binary found on PATH' } },
    { name: 'ebpf', status: none(NO_PINS) },
  ]);
  assert.equal(onlyError, {
    inPlace: false,
    text: 'iptables: cannot read: no iptables binary found on PATH\n',
    json: { inPlace: false, iptables: { error: 'no iptables binary found on PATH' }, ebpf: null },
  });
});

test.run();
