import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bpffsMountFor, probeSupport } from './support.js';

const mounts = [
  'sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0',
  'bpf /sys/fs/bpf bpf rw,relatime 0 0',
  'bpf /srv/my\\040bpf bpf rw 0 0',
  'tmpfs /sys/fs/bpf/not-bpf tmpfs rw 0 0',
].join('\n');

test('the bpffs mount holding the pin root', () => {
  assert.is(bpffsMountFor('/sys/fs/bpf/tp', mounts), '/sys/fs/bpf');
  assert.is(bpffsMountFor('/sys/fs/bpf', mounts), '/sys/fs/bpf');
  assert.is(bpffsMountFor('/srv/my bpf/tp', mounts), '/srv/my bpf');
  assert.is(bpffsMountFor('/sys/fs/bpfx/tp', mounts), undefined);
  assert.is(bpffsMountFor('/sys/fs/bpf/tp', 'sysfs /sys sysfs rw 0 0'), undefined);
});

test('no bpffs at the pin root: not supported, and the reason says how to mount it', () => {
  const r = probeSupport({ pinRoot: '/tmp/tp-no-bpffs/tp' });
  assert.not.ok(r.supported);
  assert.match(r.reason, /mount -t bpf bpf/);
});

test('a missing compiled program: not supported, and the reason says how to build it', () => {
  const r = probeSupport({ objectPath: '/nonexistent/tp_steer.bpf.o' });
  assert.not.ok(r.supported);
  // Either this machine already lacks something earlier in the chain, or the object is what is missing.
  if (/tp_steer/.test(r.reason)) assert.match(r.reason, /clang and libbpf-dev/);
});

test.run();
