// The JSON documents of an image archive that is both an OCI image layout and a docker-archive (as
// Docker 25+ `docker save` writes): the image config, the OCI manifest and index, Docker's manifest.json.
// Pure: bytes in, bytes out; the same inputs give the same bytes and so the same digests.
import { createHash } from 'node:crypto';
import { familiarName, fullName, type ImageReference } from './reference.js';

export const MEDIA_TYPES = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

/** Annotation keys on the index's manifest descriptor. */
export const ANNOTATIONS = {
  /** containerd's import names the image from this one (ctr, kind load, the CRI). */
  containerdName: 'io.containerd.image.name',
  /** The OCI layout's reference name: skopeo's oci-archive:FILE:REF and podman read it. */
  refName: 'org.opencontainers.image.ref.name',
} as const;

export interface Blob {
  /** sha256:<hex> of data. */
  digest: string;
  size: number;
  data: Buffer;
}

export interface LayerBlob {
  /** Of the gzip-compressed tar, as stored. */
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar (the config's rootfs.diff_ids). */
  diffId: string;
  uncompressedSize: number;
  /** What the layer holds, for `docker history` and the build's report. */
  comment: string;
}

/** What the image runs and as whom (the config's "config" object, Docker's names). */
export interface RuntimeConfig {
  user?: string;
  env?: string[];
  workingDir?: string;
  entrypoint?: string[];
  cmd?: string[];
  labels?: Record<string, string>;
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function blobOf(data: Buffer): Blob {
  return { digest: sha256(data), size: data.length, data };
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/** The image config; `created` is the build's fixed epoch (SOURCE_DATE_EPOCH, else 1970). */
export function imageConfig(
  runtime: RuntimeConfig,
  layers: LayerBlob[],
  created: Date,
  architecture: string,
): Blob {
  const config: Record<string, unknown> = {};
  if (runtime.user !== undefined) config.User = runtime.user;
  if (runtime.env !== undefined) config.Env = runtime.env;
  if (runtime.entrypoint !== undefined) config.Entrypoint = runtime.entrypoint;
  if (runtime.cmd !== undefined) config.Cmd = runtime.cmd;
  if (runtime.workingDir !== undefined) config.WorkingDir = runtime.workingDir;
  if (runtime.labels !== undefined) config.Labels = runtime.labels;
  const at = created.toISOString().replace(/\.000Z$/, 'Z');
  return blobOf(
    json({
      created: at,
      architecture,
      os: 'linux',
      config,
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((l) => ({ created: at, created_by: 'tp image builder', comment: l.comment })),
    }),
  );
}

export function imageManifest(config: Blob, layers: LayerBlob[]): Blob {
  return blobOf(
    json({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.manifest,
      config: { mediaType: MEDIA_TYPES.config, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: MEDIA_TYPES.layer, digest: l.digest, size: l.size })),
    }),
  );
}

/**
 * The OCI layout's index.json. Both annotations carry the full name: containerd takes
 * io.containerd.image.name (ctr 1.6 otherwise turns a bare tag into "import-DATE:TAG"), and
 * containers/image (skopeo, podman) reads ref.name as the image's name (a bare tag would become
 * localhost/TAG).
 */
export function imageIndex(manifest: Blob, ref: ImageReference, architecture: string): Buffer {
  return json({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: [
      {
        mediaType: MEDIA_TYPES.manifest,
        digest: manifest.digest,
        size: manifest.size,
        annotations: { [ANNOTATIONS.containerdName]: fullName(ref), [ANNOTATIONS.refName]: fullName(ref) },
        platform: { architecture, os: 'linux' },
      },
    ],
  });
}

/** The path of a blob inside the archive. */
export function blobPath(digest: string): string {
  return `blobs/${digest.replace(':', '/')}`;
}

/** docker-archive's manifest.json, pointing at the same blobs as the OCI manifest. */
export function dockerManifest(config: Blob, layers: LayerBlob[], ref: ImageReference): Buffer {
  return json([
    {
      Config: blobPath(config.digest),
      RepoTags: [familiarName(ref)],
      Layers: layers.map((l) => blobPath(l.digest)),
    },
  ]);
}

export const OCI_LAYOUT = json({ imageLayoutVersion: '1.0.0' });
