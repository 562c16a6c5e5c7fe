// tp-kind's node image: a Debian bookworm root filesystem (mmdebstrap, from Debian's packages) with
// systemd, containerd and runc; the lab's Kubernetes binaries (kubelet, kubeadm, kubectl), crictl and the
// CNI plugins; this folder's node/ files (entrypoint, units, containerd's configuration, kind's manifests);
// every image the cluster starts with, imported into the node's containerd (content only: containerd
// unpacks an image when a container first needs it). `docker import` makes it an image, labelled with a
// hash of all its inputs so an unchanged build is skipped.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { waitFor } from '../command/wait.js';
import { runCommand } from '../lab/command.js';
import type { KindImage } from './images.js';

/** What the root filesystem holds besides Debian's essential packages (no recommends). */
export const NODE_PACKAGES = [
  'systemd',
  'systemd-sysv',
  'dbus',
  'containerd',
  'runc',
  'iptables',
  'iproute2',
  'conntrack',
  'ethtool',
  'kmod',
  'util-linux',
  'procps',
  'ca-certificates',
  'libseccomp2',
];
export const DEBIAN_SUITE = 'bookworm';
export const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
export const INPUTS_LABEL = 'tp.dev/node-inputs';

export interface NodeImageInputs {
  /** tp-kind/node:v1.34.4 */
  name: string;
  kubernetesVersion: string;
  labBin: string;
  /** kind/node in the checkout. */
  filesDir: string;
  images: KindImage[];
  cacheDir: string;
  /** Environment for docker (DOCKER_HOST). */
  env: NodeJS.ProcessEnv;
  progress: (line: string) => void;
}

/** The node's binaries: [host path, path in the node]. */
export function nodeBinaries(labBin: string): [string, string][] {
  return [
    ...['kubelet', 'kubeadm', 'kubectl'].map((b): [string, string] => [
      path.join(labBin, b),
      `/usr/bin/${b}`,
    ]),
    [path.join(labBin, 'crictl'), '/usr/local/bin/crictl'],
    ...['bridge', 'host-local', 'loopback', 'portmap'].map((p): [string, string] => [
      path.join(labBin, 'cni', p),
      `/opt/cni/bin/${p}`,
    ]),
  ];
}

export function rootfsKey(): string {
  return createHash('sha256')
    .update([DEBIAN_SUITE, DEBIAN_MIRROR, ...NODE_PACKAGES].join('\n'))
    .digest('hex')
    .slice(0, 16);
}

function filesUnder(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

/** A hash of everything the image is made of: packages, files, binaries (size and mtime), images. */
export function nodeInputsHash(
  i: Pick<NodeImageInputs, 'kubernetesVersion' | 'labBin' | 'filesDir' | 'images'>,
) {
  const h = createHash('sha256').update(rootfsKey()).update(i.kubernetesVersion);
  for (const f of filesUnder(i.filesDir))
    h.update(path.relative(i.filesDir, f))
      .update(fs.readFileSync(f))
      .update(String(fs.statSync(f).mode));
  for (const [from] of nodeBinaries(i.labBin)) {
    const s = fs.statSync(from);
    h.update(`${from} ${s.size} ${s.mtimeMs}`);
  }
  for (const image of i.images)
    h.update(`${image.name} ${image.manifestDigest} ${image.alsoTagged.join(',')}`);
  return h.digest('hex').slice(0, 24);
}

/** The bookworm root filesystem as a tar, built once per package list (~1-2 minutes) and cached. */
async function rootfsTar(cacheDir: string, progress: (line: string) => void): Promise<string> {
  const dir = path.join(cacheDir, 'rootfs');
  const tar = path.join(dir, `bookworm-${rootfsKey()}.tar`);
  if (fs.existsSync(tar)) return tar;
  fs.mkdirSync(dir, { recursive: true });
  progress(
    `tp-kind: building the node's Debian ${DEBIAN_SUITE} root filesystem with mmdebstrap (1-2 minutes)...`,
  );
  const partial = `${tar}.partial-${process.pid}`;
  try {
    await runCommand(
      [
        'mmdebstrap',
        '--mode=root',
        '--variant=minbase',
        '--format=tar',
        '--aptopt=APT::Install-Recommends "false"',
        '--dpkgopt=path-exclude=/usr/share/man/*',
        '--dpkgopt=path-exclude=/usr/share/doc/*',
        '--dpkgopt=path-exclude=/usr/share/locale/*',
        `--include=${NODE_PACKAGES.join(',')}`,
        DEBIAN_SUITE,
        partial,
        DEBIAN_MIRROR,
      ],
      { timeoutMs: 20 * 60_000 },
    );
    fs.renameSync(partial, tar);
  } finally {
    fs.rmSync(partial, { force: true });
  }
  for (const old of fs.readdirSync(dir))
    if (path.join(dir, old) !== tar) fs.rmSync(path.join(dir, old), { force: true });
  return tar;
}

/**
 * Imports the images into <stage>/var/lib/containerd with a scratch containerd of the same version as
 * the node's (Debian's 1.6), content only (--no-unpack): no snapshots to carry through `docker import`.
 */
async function preloadImages(stage: string, images: KindImage[], work: string): Promise<void> {
  const socket = path.join(work, 'containerd.sock');
  const config = path.join(work, 'containerd.toml');
  fs.writeFileSync(
    config,
    [
      'version = 2',
      `root = "${path.join(stage, 'var', 'lib', 'containerd')}"`,
      `state = "${path.join(work, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      `[grpc]\n  address = "${socket}"`,
      '',
    ].join('\n'),
  );
  const log = fs.openSync(path.join(work, 'containerd.log'), 'w');
  const containerd = spawn('containerd', ['--config', config], { stdio: ['ignore', log, log] });
  const exited = new Promise<void>((resolve) => containerd.once('exit', () => resolve()));
  try {
    await waitFor('the scratch containerd to listen', () => fs.existsSync(socket) || undefined, 30_000, 100);
    const ctr = (args: string[]) =>
      runCommand(['ctr', '--address', socket, '--namespace', 'k8s.io', ...args], { timeoutMs: 300_000 });
    for (const image of images) {
      await ctr(['images', 'import', '--no-unpack', '--all-platforms', '--digests', image.archive]);
      for (const name of image.alsoTagged) await ctr(['images', 'tag', '--force', image.name, name]);
    }
  } finally {
    containerd.kill('SIGTERM');
    await exited;
    fs.closeSync(log);
  }
}

async function existingInputs(name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const r = await runCommand(
    ['docker', 'image', 'inspect', '--format', `{{ index .Config.Labels "${INPUTS_LABEL}" }}`, name],
    { check: false, env },
  );
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Builds the node image unless docker already has it from the same inputs; resolves to its name. */
export async function ensureNodeImage(i: NodeImageInputs): Promise<{ name: string; built: boolean }> {
  const inputs = nodeInputsHash(i);
  if ((await existingInputs(i.name, i.env)) === inputs) return { name: i.name, built: false };
  const started = Date.now();
  const tar = await rootfsTar(i.cacheDir, i.progress);
  const work = fs.mkdtempSync(path.join(i.cacheDir, 'node-build-'));
  const stage = path.join(work, 'rootfs');
  try {
    i.progress('tp-kind: assembling the node image (root filesystem, binaries, preloaded images)...');
    fs.mkdirSync(stage);
    await runCommand(['tar', '-xpf', tar, '-C', stage, '--numeric-owner']);
    // This folder's node files, then the binaries.
    await runCommand(['cp', '-a', `${i.filesDir}/.`, stage]);
    for (const [from, to] of nodeBinaries(i.labBin)) {
      fs.mkdirSync(path.join(stage, path.dirname(to)), { recursive: true });
      fs.copyFileSync(from, path.join(stage, to));
      fs.chmodSync(path.join(stage, to), 0o755);
    }
    fs.writeFileSync(path.join(stage, 'kind', 'version'), `${i.kubernetesVersion}\n`);
    fs.writeFileSync(path.join(stage, 'etc', 'machine-id'), '');
    fs.mkdirSync(path.join(stage, 'etc', 'kubernetes', 'manifests'), { recursive: true });
    const wants = path.join(stage, 'etc', 'systemd', 'system', 'multi-user.target.wants');
    fs.mkdirSync(wants, { recursive: true });
    fs.rmSync(path.join(wants, 'kubelet.service'), { force: true });
    fs.symlinkSync('/etc/systemd/system/kubelet.service', path.join(wants, 'kubelet.service'));
    await preloadImages(stage, i.images, work);
    i.progress(`tp-kind: docker import ${i.name}...`);
    const tarStream = spawn('tar', ['-C', stage, '--numeric-owner', '-cf', '-', '.'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const imported = spawn(
      'docker',
      [
        'import',
        '--change',
        'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
        '--change',
        'ENV container=docker',
        '--change',
        `LABEL ${INPUTS_LABEL}=${inputs}`,
        '--message',
        `tp-kind node ${i.kubernetesVersion}`,
        '-',
        i.name,
      ],
      { stdio: [tarStream.stdout, 'ignore', 'pipe'], env: i.env },
    );
    let stderr = '';
    imported.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const code = await new Promise<number>((resolve) => imported.on('close', (c) => resolve(c ?? 1)));
    if (code !== 0) throw new Error(`docker import ${i.name} failed: ${stderr.trim()}`);
    i.progress(`tp-kind: built ${i.name} in ${((Date.now() - started) / 1000).toFixed(0)}s`);
    return { name: i.name, built: true };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
