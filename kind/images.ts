// The images tp-kind's node image preloads, so that `kind create cluster` pulls nothing: the control
// plane kubeadm runs (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd) from
// the lab's binaries, the storage provisioner and its helper, and the lab's own pause and CoreDNS images
// under the names kubeadm asks for. Built by image/ from this host's files (nothing is pulled).
import * as path from 'node:path';
import { BuildSession, type ImageSpec } from '../image/build.js';
import { run } from '../image/host.js';
import { accountFiles, baseLayer, busyboxLayer, DEFAULT_PATH, NOBODY, ROOT } from '../image/layers.js';
import { multiarchTriplet } from '../image/platform.js';
import { archiveFileName, fullName, parseReference } from '../image/reference.js';
import { captureToolsLayer } from '../image/tp-image.js';
import { buildLabImages, type LabImage } from '../lab/images/build.js';
import { UsageError } from '../netaddr/parse.js';

/**
 * kubeadm's imageRepository for the whole control plane (kind's configuration sets it): every image the
 * node runs is visibly one built here, never one that looks like registry.k8s.io's.
 */
export const IMAGE_REPOSITORY = 'tp-kind';
/** kubeadm checks for its own pause tag (no configuration names another); the program is lab/images/pause. */
export const KUBEADM_PAUSE_TAG = '3.10.1';
export const PAUSE_IMAGE = `${IMAGE_REPOSITORY}/pause:${KUBEADM_PAUSE_TAG}`;
export const STORAGE_HELPER_IMAGE = `${IMAGE_REPOSITORY}/local-path-helper:1`;
const CONTROL_PLANE = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'] as const;

export interface ComponentVersions {
  /** v1.34.4 */
  kubernetes: string;
  /** 3.5.35 (etcd --version) */
  etcd: string;
  /** 1.14.2 (coredns -version) */
  coredns: string;
  /** v0.0.30 */
  localPath: string;
}

/**
 * The tags kubeadm must be told (kind's kubeadmConfigPatches): etcd's tag is a semantic version (kubeadm
 * picks etcd's flags by it: 3.6+ only understands --feature-gates), CoreDNS's is the binary's version.
 */
export function kubeadmImageTags(v: ComponentVersions): { etcd: string; coredns: string } {
  return { etcd: `${v.etcd}-0`, coredns: `v${v.coredns}` };
}

export interface KindImageInputs {
  /** The lab's bin dir (lab/build.sh): the control plane and etcd. */
  labBin: string;
  /** tp-kind's bin dir (kind/build.sh): local-path-provisioner. */
  kindBin: string;
  versions: ComponentVersions;
  triplet: string;
}

/** The images built for the node (pure, given where their files are). */
export function kindImageSpecs(i: KindImageInputs): ImageSpec[] {
  const accounts = accountFiles([ROOT, NOBODY]);
  const binary = (name: string, from: string, comment: string, extra: ImageSpec['layers'] = []) => ({
    layers: [
      baseLayer(),
      ...extra,
      { comment, items: [{ copy: from, to: `/usr/local/bin/${name}`, mode: 0o755 }, ...accounts] },
    ],
  });
  const specs: ImageSpec[] = CONTROL_PLANE.map((name) => ({
    name: `${IMAGE_REPOSITORY}/${name}:${i.versions.kubernetes}`,
    // kube-proxy programs iptables (Debian's names; nft, as on the node).
    ...binary(
      name,
      path.join(i.labBin, name),
      `${name} ${i.versions.kubernetes}`,
      name === 'kube-proxy' ? [captureToolsLayer(i.triplet)] : [],
    ),
    ...(name === 'kube-proxy' ? { libraryDirs: [`/usr/lib/${i.triplet}`] } : {}),
    config: { env: [DEFAULT_PATH], workingDir: '/' },
  }));
  specs.push({
    name: `${IMAGE_REPOSITORY}/etcd:${kubeadmImageTags(i.versions).etcd}`,
    ...binary('etcd', path.join(i.labBin, 'etcd'), `etcd ${i.versions.etcd}`),
    config: { env: [DEFAULT_PATH], workingDir: '/' },
  });
  specs.push({
    name: `${IMAGE_REPOSITORY}/local-path-provisioner:${i.versions.localPath}`,
    ...binary(
      'local-path-provisioner',
      path.join(i.kindBin, 'local-path-provisioner'),
      `local-path-provisioner ${i.versions.localPath}`,
    ),
    config: { env: [DEFAULT_PATH], workingDir: '/' },
  });
  specs.push({
    name: STORAGE_HELPER_IMAGE,
    layers: [baseLayer(), busyboxLayer(), { comment: 'accounts', items: accounts }],
    config: { env: [DEFAULT_PATH], workingDir: '/', cmd: ['sh'] },
  });
  return specs;
}

export interface KindImage {
  /** As containerd names it: docker.io/tp-kind/etcd:3.5.35-0. */
  name: string;
  archive: string;
  manifestDigest: string;
  /** Further names for the same image in the node (lab images kubeadm knows by another name). */
  alsoTagged: string[];
}

async function versionOf(binary: string, args: string[], pattern: RegExp): Promise<string> {
  const r = await run(binary, args).catch(() => ({ code: 1, stdout: '', stderr: '' }));
  const v = pattern.exec(r.stdout)?.[1];
  if (r.code !== 0 || v === undefined)
    throw new UsageError(
      `${binary} ${args.join(' ')} did not say its version: rebuild it (bash lab/build.sh)`,
    );
  return v;
}

/** etcd's and CoreDNS's versions, as the lab's binaries report them. */
export async function binaryVersions(labBin: string): Promise<{ etcd: string; coredns: string }> {
  return {
    etcd: await versionOf(path.join(labBin, 'etcd'), ['--version'], /etcd Version: (\S+)/),
    coredns: await versionOf(path.join(labBin, 'coredns'), ['-version'], /CoreDNS-(\S+)/),
  };
}

/**
 * Builds (or reuses) every image the node preloads into `outDir`, and the lab's images (pause, CoreDNS,
 * echo, shell; lab/images/) beside them. Returns the node's images, and the lab's echo and shell for
 * `kind load image-archive`.
 */
export async function buildKindImages(
  outDir: string,
  inputs: Omit<KindImageInputs, 'triplet'>,
  progress: (line: string) => void,
): Promise<{ node: KindImage[]; lab: LabImage[] }> {
  const lab = await buildLabImages(path.join(outDir, 'lab'), {
    coredns: path.join(inputs.labBin, 'coredns'),
    progress,
  });
  const labImage = (key: LabImage['key']) => lab.find((l) => l.key === key)!;
  const tags = kubeadmImageTags(inputs.versions);
  const node: KindImage[] = [
    { ...pick(labImage('pause')), alsoTagged: [fullRef(PAUSE_IMAGE)] },
    { ...pick(labImage('coredns')), alsoTagged: [fullRef(`${IMAGE_REPOSITORY}/coredns:${tags.coredns}`)] },
  ];
  const session = new BuildSession({ progress });
  try {
    for (const spec of kindImageSpecs({ ...inputs, triplet: multiarchTriplet() })) {
      const built = await session.build(spec, path.join(outDir, archiveFileName(parseReference(spec.name))));
      node.push({
        name: built.name,
        archive: built.archive,
        manifestDigest: built.manifestDigest,
        alsoTagged: [],
      });
    }
  } finally {
    session.close();
  }
  return { node, lab };
}

function pick(l: LabImage): Omit<KindImage, 'alsoTagged'> {
  return { name: l.name, archive: l.archive, manifestDigest: l.manifestDigest };
}

const fullRef = (name: string) => fullName(parseReference(name));
