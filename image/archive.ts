// The image archive on disk: an OCI image layout (oci-layout, index.json, blobs/sha256/…) that is also
// a docker-archive (manifest.json naming the same blobs), entries sorted by name. Written to a scratch
// file beside the target and renamed into place, so a failed or interrupted build leaves no partial
// archive behind.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Blob } from './oci.js';
import { blobPath, dockerManifest, imageIndex, imageManifest, type LayerBlob, OCI_LAYOUT } from './oci.js';
import type { ImageReference } from './reference.js';
import { releaseScratch, trackScratch } from './scratch.js';
import { type TarEntry, tarStream } from './tar.js';

export interface ArchiveContents {
  ref: ImageReference;
  architecture: string;
  config: Blob;
  layers: (LayerBlob & { data: Buffer })[];
}

export interface ArchiveFile {
  name: string;
  data: Buffer;
}

/** Every file of the archive, sorted by name; also returns the manifest (its digest names the image). */
export function archiveFiles(c: ArchiveContents): { files: ArchiveFile[]; manifest: Blob } {
  const manifest = imageManifest(c.config, c.layers);
  const blobs = new Map<string, Buffer>();
  for (const blob of [c.config, manifest, ...c.layers]) blobs.set(blobPath(blob.digest), blob.data);
  const files: ArchiveFile[] = [...blobs].map(([name, data]) => ({ name, data }));
  files.push(
    { name: 'index.json', data: imageIndex(manifest, c.ref, c.architecture) },
    { name: 'manifest.json', data: dockerManifest(c.config, c.layers, c.ref) },
    { name: 'oci-layout', data: OCI_LAYOUT },
  );
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { files, manifest };
}

export function archiveEntries(files: ArchiveFile[]): TarEntry[] {
  const dirs = new Set<string>();
  for (const f of files) {
    for (let d = path.posix.dirname(f.name); d !== '.'; d = path.posix.dirname(d)) dirs.add(d);
  }
  const entries: TarEntry[] = [...dirs]
    .sort()
    .map((name) => ({ type: 'directory', name, mode: 0o755, uid: 0, gid: 0 }) as const);
  for (const f of files)
    entries.push({ type: 'file', name: f.name, mode: 0o644, uid: 0, gid: 0, content: f.data });
  return entries;
}

/** Writes the archive atomically; returns its size in bytes. */
export async function writeArchive(
  file: string,
  files: ArchiveFile[],
  mtimeSeconds: number,
): Promise<number> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const scratch = `${file}.partial-${process.pid}`;
  trackScratch(scratch);
  try {
    await pipeline(tarStream(archiveEntries(files), mtimeSeconds), fs.createWriteStream(scratch));
    fs.renameSync(scratch, file);
    return fs.statSync(file).size;
  } finally {
    releaseScratch(scratch);
  }
}
