// The eBPF mechanism's command line (what `tp-init … --mechanism ebpf` runs): apply, status with counters,
// cleanup, probe, and its answers to bad input, against a real pod namespace.
import { type ChildProcess, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type BpffsMount, ensureBpffs } from '../../testbed/bpffs.js';
import {
  createPodTestbed,
  onProcessEnd,
  type PodTestbed,
  RESPONDER,
  waitForLine,
} from '../../testbed/pod-testbed.js';
import { cleanup } from '../mechanism.js';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'main.js');
const prefix = `tpe-${process.pid % 100000}`;
const pinRoot = `/sys/fs/bpf/${prefix}`;

let bpffs: BpffsMount | undefined;
let bed: PodTestbed;
let app: ChildProcess;

function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
const ns = () => ['--netns', bed.podNetnsPath, '--pin-root', pinRoot];

function teardown(): void {
  try {
    if (bed && fs.existsSync(bed.podNetnsPath)) cleanup({ netnsPath: bed.podNetnsPath, pinRoot });
  } catch {
    // the namespace goes next, which detaches the link anyway
  }
  bed?.destroy();
  if (fs.existsSync(pinRoot)) fs.rmdirSync(pinRoot);
  bpffs?.release();
}
onProcessEnd(teardown);

test.before(async () => {
  bpffs = ensureBpffs();
  bed = createPodTestbed(prefix, '10.252.0');
  app = bed.spawnInPod(process.execPath, [RESPONDER, 'app', '8080']);
  await waitForLine(app, /^ready/);
});
test.after(teardown);

test('probe: supported here, exit 0', () => {
  const r = cli('probe', '--pin-root', pinRoot);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^supported: Linux .* supports sk_lookup/);
});

test('apply, apply again, status with counters', async () => {
  const first = cli('apply', '--ports', '8080,9090', ...ns());
  assert.is(first.code, 0, first.stderr);
  assert.match(first.stdout, /attached tp_steer \(tag [0-9a-f]{16}\) to network namespace \d+ as link \d+/);
  const again = cli('apply', '--ports', '8080,9090', ...ns());
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /already in place .*nothing changed/);

  await bed.curlFromClient(`http://${bed.podIp}:8080/`);
  const text = cli('status', ...ns());
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, /eBPF capture: attached to network namespace/);
  assert.match(text.stdout, /\n {2}8080 +off +0 +1 +0 +0\n/);
  const json = cli('status', '-o', 'json', ...ns());
  const s = JSON.parse(json.stdout);
  assert.is(s.attached, true);
  assert.equal(s.ports[0], {
    port: 8080,
    steering: false,
    stats: { steered: 0, noListener: 1, local: 0, assignFailed: 0 },
  });
});

test('cleanup: everything removed, status says so and exits non-zero', () => {
  const r = cli('cleanup', ...ns());
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /removed .*\/link, .*\/tp_stats/);
  assert.is(cli('cleanup', ...ns()).stdout.includes('nothing to remove'), true);
  const s = cli('status', ...ns());
  assert.is(s.code, 1);
  assert.match(s.stdout, /not applied/);
  assert.equal(fs.readdirSync(pinRoot), []);
});

test('bad input: a clear message, exit 1, no stack, nothing pinned', () => {
  const badPort = cli('apply', '--ports', '8080,http', ...ns());
  assert.is(badPort.code, 1);
  assert.match(badPort.stderr, /invalid app port "http"/);
  assert.not.match(badPort.stderr, /\n\s+at /);
  const noBpffs = cli('apply', '--ports', '8080', '--netns', bed.podNetnsPath, '--pin-root', '/tmp/tp-x/tp');
  assert.is(noBpffs.code, 1);
  assert.match(noBpffs.stderr, /eBPF capture is not available: no bpffs is mounted at \/tmp\/tp-x/);
  const noNs = cli('status', '--netns', '/run/netns/tpe-missing', '--pin-root', pinRoot);
  assert.is(noNs.code, 1);
  assert.match(noNs.stderr, /network namespace \/run\/netns\/tpe-missing cannot be opened/);
  assert.equal(fs.readdirSync(pinRoot), []);
  assert.not.ok(fs.existsSync('/tmp/tp-x'));
});

test.run();
