// tp's real image: built from this checkout's dist/bundle (node build.mjs) and this host, read by skopeo
// in both formats, imported into a scratch containerd and run with `ctr run`: each tp binary, the
// default user, both iptables backends, and tp-init's eBPF mechanism (koffi, libbpf through the image's
// ld.so.cache, the bpf object beside the bundle) in a privileged container with its own bpffs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as assert from 'uvu/assert';
import { runCommand } from '../../lab/command.js';
import { containerdSuite, ScratchContainerd } from '../../testbed/containerd.js';
import { VERSION } from '../../version/version.js';
import { BuildSession, type BuiltImage } from '../build.js';
import { tpImageSpec } from '../tp-image.js';

const { test, ready } = containerdSuite('tp image', ['skopeo']);

let dir = '';
let image: BuiltImage;
let rootImage: BuiltImage;
let ctd: ScratchContainerd | undefined;

async function skopeo(args: string[]): Promise<Record<string, unknown>> {
  const r = await runCommand(['skopeo', ...args], { check: false, timeoutMs: 120_000 });
  assert.is(r.code, 0, `skopeo ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

async function run(args: string[]) {
  return ctd!.run(image.name, args);
}

if (ready) {
  test.before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-image-real-'));
    const spec = await tpImageSpec();
    const session = new BuildSession({ force: true });
    try {
      image = await session.build(spec, path.join(dir, 'tp.tar'));
      // The same layers as root: ctr 1.6 has no --user, and loading eBPF needs root (tp-init runs as
      // UID 0 in a pod).
      rootImage = await session.build(
        { ...spec, name: 'tp/tp-root:test', config: { ...spec.config, user: '0:0' } },
        path.join(dir, 'tp-root.tar'),
      );
    } finally {
      session.close();
    }
    ctd = await ScratchContainerd.start('image');
  });

  test.after(async () => {
    await ctd?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('skopeo reads the archive as an OCI archive and as a docker-archive', async () => {
    const oci = await skopeo(['inspect', `oci-archive:${image.archive}`]);
    assert.is(oci.Digest, image.manifestDigest);
    assert.equal(
      oci.Layers,
      image.layers.map((l) => l.digest),
    );
    assert.is((oci.Labels as Record<string, string>)['org.opencontainers.image.version'], VERSION);
    // By name: the OCI reference name is the full image name.
    assert.is(
      (await skopeo(['inspect', `oci-archive:${image.archive}:docker.io/tp/tp:${VERSION}`])).Digest,
      image.manifestDigest,
    );
    // docker-archive lists the layers by their uncompressed digests.
    const docker = await skopeo(['inspect', `docker-archive:${image.archive}`]);
    assert.equal(
      docker.Layers,
      image.layers.map((l) => l.diffId),
    );
    const config = await skopeo(['inspect', '--config', `docker-archive:${image.archive}`]);
    assert.equal((config as { config: { User: string } }).config.User, '7777:7777');
    // Every blob verifies when copied out.
    const copy = await runCommand(
      ['skopeo', 'copy', '-q', `oci-archive:${image.archive}`, `dir:${path.join(dir, 'copy')}`],
      {
        check: false,
        timeoutMs: 120_000,
      },
    );
    assert.is(copy.code, 0, copy.stderr);
  });

  test('ctr imports it under its full name and manifest digest', async () => {
    const r = await ctd!.importArchive(image.archive);
    assert.is(r.code, 0, r.stderr);
    assert.is(image.name, `docker.io/tp/tp:${VERSION}`);
    const list = await ctd!.ctr(['images', 'ls']);
    const line = list.stdout.split('\n').find((l) => l.startsWith(`${image.name} `));
    assert.ok(line, list.stdout);
    assert.ok(line!.includes(image.manifestDigest), line);
  });

  test('tp-manager, tp-init, tp-agent and tp-agent-holder run from their entry points; Node reads none of their flags', async () => {
    const version = await run(['tp-manager', '--version']);
    assert.equal([version.code, version.stdout], [0, `${VERSION}\n`], version.stderr);
    // Node itself would fail on --env-file with a missing file (exit 9) before tp-init ran.
    const help = await run(['tp-init', '--env-file', 'x', '--help']);
    assert.is(help.code, 0, help.stderr);
    assert.match(help.stdout, /Usage: tp-init/);
    const agent = await run(['tp-agent']);
    assert.is.not(agent.code, 0);
    assert.match(agent.stdout + agent.stderr, /TP_\w+ is not set: the agent needs it/);
    // The holder runs tp-agent from PATH: here it stops at once, five times, and the holder gives up.
    const holder = await run(['env', 'TP_PORTS=8080:15001', 'TP_PROBE_PORT=15021', 'tp-agent-holder']);
    assert.is(holder.code, 1, holder.stderr);
    assert.match(holder.stdout + holder.stderr, /holding the listening sockets/);
    assert.match(holder.stdout + holder.stderr, /TP_\w+ is not set: the agent needs it/);
    assert.match(holder.stdout + holder.stderr, /the agent worker keeps dying/);
  });

  test('the default user is tp (7777:7777), not root; a shell and its tools are there', async () => {
    const status = await run(['cat', '/proc/self/status']);
    assert.is(status.code, 0, status.stderr);
    assert.match(status.stdout, /^Uid:\s+7777\s+7777\s+7777\s+7777$/m);
    assert.match(status.stdout, /^Gid:\s+7777\s+7777\s+7777\s+7777$/m);
    const shell = await run(['sh', '-c', 'id -un; ls /opt/tp; ps -o pid,comm']);
    assert.is(shell.code, 0, shell.stderr);
    assert.match(shell.stdout, /^tp\n/);
    assert.match(shell.stdout, /tp-init\.mjs\n/);
    assert.match(shell.stdout, /tp_steer\.bpf\.o\n/);
  });

  test('iptables with both backends, under every name tp-init looks for', async () => {
    const nft = await run(['iptables-nft', '--version']);
    assert.equal([nft.code, nft.stdout.trim()], [0, 'iptables v1.8.9 (nf_tables)'], nft.stderr);
    const legacy = await run(['iptables-legacy', '--version']);
    assert.equal([legacy.code, legacy.stdout.trim()], [0, 'iptables v1.8.9 (legacy)'], legacy.stderr);
    const names = ['iptables', 'ip6tables'].flatMap((f) =>
      ['', '-nft', '-legacy'].flatMap((b) => ['', '-save', '-restore'].map((s) => `/usr/sbin/${f}${b}${s}`)),
    );
    const listed = await run(['ls', ...names]);
    assert.is(listed.code, 0, listed.stderr);
  });

  test('koffi loads libbpf.so.1 by name (the image has its own /etc/ld.so.cache)', async () => {
    const r = await run([
      'node',
      '-e',
      "const k = require('/opt/tp/node_modules/koffi'); k.load('libbpf.so.1'); console.log('libbpf via koffi', k.version)",
    ]);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /libbpf via koffi \d/);
  });

  test("tp-init's eBPF mechanism works in the image: program from /opt/tp, libbpf, koffi", async () => {
    const imported = await ctd!.importArchive(rootImage.archive);
    assert.is(imported.code, 0, imported.stderr);
    // Its own bpffs and network namespace: the kernel frees the program when the container ends.
    const r = await ctd!.run(
      rootImage.name,
      [
        'sh',
        '-c',
        'tp-init apply --mechanism ebpf --ports 8080 && tp-init status --mechanism ebpf --ports 8080',
      ],
      { privileged: true, mounts: ['type=bpf,src=bpf,dst=/sys/fs/bpf,options=rw'] },
    );
    assert.is(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /eBPF capture: captured ports 8080/);
    assert.match(r.stdout, /program: tp_steer id \d+/);
  });
}

test.run();
