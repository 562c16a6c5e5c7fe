// tp-init with the eBPF mechanism, run inside a real pod namespace (nsenter keeps the mount namespace, so
// bpffs): probe, apply, status with counters (alone and beside iptables), cleanup, the fallback to iptables
// saying why, and its answers to bad input.
import { type ChildProcess, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanup } from '../../bpf/mechanism.js';
import { type BpffsMount, ensureBpffs } from '../../testbed/bpffs.js';
import {
  createPodTestbed,
  onProcessEnd,
  type PodTestbed,
  RESPONDER,
  teardownEbpfBed,
  waitForLine,
} from '../../testbed/pod-testbed.js';

const TP_INIT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'main.js');
const prefix = `tpi-${process.pid % 100000}`;
const pinRoot = `/sys/fs/bpf/${prefix}`;

let bpffs: BpffsMount | undefined;
let bed: PodTestbed;
let app: ChildProcess;

/** tp-init in the pod's network namespace, as its init container runs it. */
function tpInit(...args: string[]): { code: number; stdout: string; stderr: string } {
  const argv = [`--net=${bed.podNetnsPath}`, process.execPath, TP_INIT, ...args];
  const r = spawnSync('nsenter', argv, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
const ebpf = ['--mechanism', 'ebpf', '--pin-root', pinRoot];

const teardown = () => teardownEbpfBed(bed, pinRoot, bpffs, cleanup);
onProcessEnd(teardown);

test.before(async () => {
  bpffs = ensureBpffs();
  bed = createPodTestbed(prefix, '10.252.0');
  app = bed.spawnInPod(process.execPath, [RESPONDER, 'app', '8080']);
  await waitForLine(app, /^ready/);
});
test.after(teardown);

test('probe: both mechanisms supported here, exit 0', () => {
  const r = tpInit('probe', '--pin-root', pinRoot);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^iptables: supported: IPv4 iptables backends usable here: /m);
  assert.match(r.stdout, /^eBPF: supported: Linux .* supports sk_lookup/m);
  const json = JSON.parse(tpInit('probe', ...ebpf, '-o', 'json').stdout);
  assert.equal(
    json.map((p: { mechanism: string; supported: boolean }) => [p.mechanism, p.supported]),
    [['ebpf', true]],
  );
});

test('apply, apply again, status with counters', async () => {
  const first = tpInit('apply', '--ports', '8080,9090', ...ebpf);
  assert.is(first.code, 0, first.stderr);
  assert.match(first.stdout, /attached tp_steer \(tag [0-9a-f]{16}\) to network namespace \d+ as link \d+/);
  assert.not.match(first.stderr, /not available/, 'no fallback');
  const again = tpInit('apply', '--ports', '8080,9090', ...ebpf);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /already in place .*nothing changed/);

  await bed.curlFromClient(`http://${bed.podIp}:8080/`);
  const text = tpInit('status', ...ebpf);
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, /eBPF capture: attached to network namespace/);
  assert.match(text.stdout, /\n {2}8080 +off +0 +1 +0 +0\n/);
  const json = tpInit('status', '-o', 'json', ...ebpf);
  const s = JSON.parse(json.stdout);
  assert.is(s.attached, true);
  assert.equal(s.ports[0], {
    port: 8080,
    steering: false,
    stats: { steered: 0, noListener: 1, local: 0, assignFailed: 0 },
  });
});

test('status without flags: the eBPF capture found beside no iptables rules, in place', () => {
  const text = tpInit('status', '--pin-root', pinRoot);
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, /^eBPF capture: attached to network namespace \d+\n/);
  assert.not.match(text.stdout, /no tp capture rules/);
  const json = JSON.parse(tpInit('status', '-o', 'json', '--pin-root', pinRoot).stdout);
  assert.is(json.inPlace, true);
  assert.is(json.iptables, null);
  assert.is(json.ebpf.attached, true);
});

test('cleanup: everything removed, status says so and exits non-zero', () => {
  const r = tpInit('cleanup', ...ebpf);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /removed .*\/link, .*\/tp_stats/);
  assert.match(r.stdout, /nothing to clean: no tp chains/, 'then the iptables a fallback would have left');
  assert.is(tpInit('cleanup', ...ebpf).stdout.includes('eBPF capture: nothing to remove'), true);
  const s = tpInit('status', ...ebpf);
  assert.is(s.code, 1);
  assert.match(s.stdout, /not applied/);
  const all = tpInit('status', '--pin-root', pinRoot);
  assert.is(all.code, 1);
  assert.match(all.stdout, /^no tp capture rules: .*\neBPF capture: not applied/);
  assert.equal(fs.readdirSync(pinRoot), []);
});

test('no bpffs at the pin root: apply falls back to iptables saying why; cleanup --mechanism ebpf removes that too', () => {
  const noBpffs = ['--mechanism', 'ebpf', '--pin-root', '/tmp/tp-x/tp'];
  const r = tpInit('apply', '--ports', '8080', ...noBpffs);
  assert.is(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    /eBPF capture is not available: no bpffs is mounted at \/tmp\/tp-x: .*; falling back to iptables/,
  );
  assert.match(r.stdout, /installed, as `ip(6)?tables-\w+-save -t nat` shows them:/);
  const s = tpInit('status', '--pin-root', '/tmp/tp-x/tp');
  assert.is(s.code, 0, s.stdout + s.stderr);
  assert.match(s.stdout, /IPv4 \(\w+ backend\): in place/);
  const c = tpInit('cleanup', ...noBpffs);
  assert.is(c.code, 0, c.stderr);
  assert.match(
    c.stdout,
    /^eBPF capture: nothing to remove in \/tmp\/tp-x\/tp\/\d+\nIPv4 \(\w+ backend\): removed 2 jumps/,
  );
  assert.is(tpInit('status').code, 1, 'nothing left');
  assert.not.ok(fs.existsSync('/tmp/tp-x'));
});

test('bad input: a clear message, exit 1, no stack, nothing pinned', () => {
  const badPort = tpInit('apply', '--ports', '8080,http', ...ebpf);
  assert.is(badPort.code, 1);
  assert.match(badPort.stderr, /invalid app port "http"/);
  assert.not.match(badPort.stderr, /\n\s+at /);
  const all = tpInit('apply', '--ports', '*', ...ebpf);
  assert.is(all.code, 1);
  assert.match(all.stderr, /--ports "\*" needs --mechanism iptables/);
  const relative = tpInit('status', '--mechanism', 'ebpf', '--pin-root', 'tp');
  assert.is(relative.code, 1);
  assert.match(relative.stderr, /--pin-root "tp" must be an absolute path/);
  assert.equal(fs.readdirSync(pinRoot), []);
  assert.is(tpInit('status').code, 1, 'no iptables rule either');
});

test.run();
