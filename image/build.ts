// Builds image archives from ImageSpecs: resolve the layers against the host, generate the image's
// /etc/ld.so.cache, write each layer (a layer equal to one already written in this session is reused),
// the config and manifests, and the archive. Beside each archive a build record (ARCHIVE.build.json)
// keeps the spec's fingerprint and the metadata of every host file used: when none of them changed,
// the archive is reused without reading anything else.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { archiveFiles, writeArchive } from './archive.js';
import { currentSignature, LocalHost, ldconfigCache } from './host.js';
import { type BuiltLayer, buildLayer } from './layer.js';
import { imageConfig, type RuntimeConfig, sha256 } from './oci.js';
import { ociArchitecture } from './platform.js';
import { fullName, parseReference } from './reference.js';
import type { LayerSpec, RootfsEntry } from './rootfs.js';
import { resolveLayers } from './rootfs.js';
import { stageEntries } from './stage.js';

export interface ImageSpec {
  /** [REGISTRY/]REPOSITORY:TAG, e.g. tp/tp:0.1.0. */
  name: string;
  layers: LayerSpec[];
  config: RuntimeConfig;
  /**
   * Where the image keeps shared libraries: written to /etc/ld.so.conf, and /etc/ld.so.cache is
   * generated for them (so dlopen("libbpf.so.1") finds it), in the last layer. Leave out for static images.
   */
  libraryDirs?: string[];
}

export interface LayerReport {
  comment: string;
  digest: string;
  diffId: string;
  /** Compressed, as stored. */
  size: number;
  uncompressedSize: number;
}

export interface BuiltImage {
  /** The fully qualified name containerd gives it: docker.io/tp/tp:0.1.0. */
  name: string;
  archive: string;
  /** The config's digest: what `docker images` and `crictl images` show as the image ID. */
  imageId: string;
  manifestDigest: string;
  archiveSize: number;
  compressedSize: number;
  uncompressedSize: number;
  layers: LayerReport[];
  /** true: the archive from an earlier build was still current. */
  reused: boolean;
}

export interface BuildOptions {
  /** Progress lines (long steps say what they do). */
  progress?: (line: string) => void;
  /** Seconds since 1970 for every timestamp; default $SOURCE_DATE_EPOCH, else 0. */
  epoch?: number;
  /** Build even when the build record says the archive is current. */
  force?: boolean;
}

/** Bumped when the archive's format changes in a way the builder's code hash would not show. */
const FORMAT = 1;

export function defaultEpoch(env: NodeJS.ProcessEnv = process.env): number {
  const value = env.SOURCE_DATE_EPOCH;
  if (value === undefined || value === '') return 0;
  if (!/^\d+$/.test(value)) throw new Error(`SOURCE_DATE_EPOCH="${value}" is not a number of seconds`);
  return Number(value);
}

let builderHash: string | undefined;
/** The builder's own code (this folder's compiled files): a change to it invalidates every record. */
function builderCode(): string {
  if (builderHash === undefined) {
    const dir = path.dirname(fileURLToPath(import.meta.url));
    const hash = createHash('sha256');
    for (const name of fs
      .readdirSync(dir)
      .filter((n) => n.endsWith('.js') && !n.endsWith('.test.js'))
      .sort()) {
      hash.update(name).update(fs.readFileSync(path.join(dir, name)));
    }
    builderHash = hash.digest('hex');
  }
  return builderHash;
}

/** The fingerprint of everything but the host files: the spec (generated files by hash), the epoch, the code. */
export function specFingerprint(spec: ImageSpec, epoch: number, code: string): string {
  const text = JSON.stringify(
    { format: FORMAT, code, epoch, spec },
    function (this: Record<string, unknown>, key, value) {
      const original = this[key];
      return Buffer.isBuffer(original) ? sha256(original) : value;
    },
  );
  return sha256(text);
}

interface BuildRecord {
  fingerprint: string;
  inputs: Record<string, string>;
  archive: { size: number; mtimeMs: number };
  image: Omit<BuiltImage, 'archive' | 'reused'>;
}

function recordPath(archive: string): string {
  return `${archive}.build.json`;
}

function currentRecord(archive: string, fingerprint: string): BuildRecord | undefined {
  let record: BuildRecord;
  try {
    record = JSON.parse(fs.readFileSync(recordPath(archive), 'utf8')) as BuildRecord;
    const st = fs.statSync(archive);
    if (record.fingerprint !== fingerprint) return undefined;
    if (st.size !== record.archive.size || st.mtimeMs !== record.archive.mtimeMs) return undefined;
  } catch {
    return undefined;
  }
  for (const [input, signature] of Object.entries(record.inputs)) {
    if (currentSignature(input) !== signature) return undefined;
  }
  return record;
}

/** 37.0 MiB, 12.3 KiB: for people. */
export function formatSize(bytes: number): string {
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function layerKey(entries: RootfsEntry[]): string {
  return sha256(
    JSON.stringify(
      entries.map((e) =>
        e.type === 'file'
          ? {
              ...e,
              source:
                'data' in e.source ? sha256(e.source.data) : currentSignature(e.source.host) + e.source.host,
            }
          : e,
      ),
    ),
  );
}

/** Builds several images with one view of the host: shared layers are written once. */
export class BuildSession {
  private readonly host = new LocalHost();
  private readonly layers = new Map<string, Promise<BuiltLayer>>();
  private readonly progress: (line: string) => void;
  private readonly epoch: number;

  constructor(private readonly options: BuildOptions = {}) {
    this.progress = options.progress ?? (() => {});
    this.epoch = options.epoch ?? defaultEpoch();
  }

  /** The image's layers as entries, with /etc/ld.so.cache generated; records the host inputs used. */
  async resolve(spec: ImageSpec, inputs: Map<string, string>): Promise<RootfsEntry[][]> {
    const view = this.host.view(inputs);
    const dirs = spec.libraryDirs ?? [];
    if (dirs.length === 0) return resolveLayers(spec.layers, view);
    // The last layer gets /etc/ld.so.conf, and the /etc/ld.so.cache ldconfig builds from the image's
    // libraries: resolve, stage the libraries, run ldconfig, resolve again with the cache.
    const last = spec.layers[spec.layers.length - 1]!;
    const withFiles = (items: LayerSpec['items']) => [
      ...spec.layers.slice(0, -1),
      { ...last, items: [...last.items, ...items] },
    ];
    const conf = { file: '/etc/ld.so.conf', data: `${dirs.join('\n')}\n` };
    const layers = await resolveLayers(withFiles([conf]), view);
    const needed = (p: string) => p === conf.file || dirs.some((d) => p.startsWith(`${d}/`));
    const root = this.host.scratchDir('ldconfig');
    stageEntries(
      layers.flat().filter((e) => e.type !== 'dir' && needed(e.path)),
      root,
      { owners: false },
    );
    const cache = await ldconfigCache(root, inputs);
    return resolveLayers(withFiles([conf, { file: '/etc/ld.so.cache', data: cache }]), view);
  }

  /** Builds the image into `archive` (or reuses it when its build record is current). */
  async build(spec: ImageSpec, archive: string): Promise<BuiltImage> {
    const ref = parseReference(spec.name);
    const fingerprint = specFingerprint(spec, this.epoch, builderCode());
    const record = this.options.force ? undefined : currentRecord(archive, fingerprint);
    if (record !== undefined) return { ...record.image, archive, reused: true };

    const started = Date.now();
    fs.rmSync(recordPath(archive), { force: true });
    const inputs = new Map<string, string>();
    this.progress(`${spec.name}: resolving ${spec.layers.length} layers against the host`);
    const resolved = await this.resolve(spec, inputs);
    const layers: BuiltLayer[] = [];
    for (const [i, entries] of resolved.entries()) {
      const comment = spec.layers[i]!.comment;
      const key = layerKey(entries);
      let layer = this.layers.get(key);
      if (layer === undefined) {
        const t = Date.now();
        this.progress(
          `${spec.name}: layer ${i + 1}/${resolved.length} (${comment}): ${entries.length} entries...`,
        );
        layer = buildLayer(entries, comment, this.epoch).then((l) => {
          this.progress(
            `${spec.name}: layer ${i + 1}/${resolved.length} (${comment}): ${formatSize(l.uncompressedSize)} -> ${formatSize(l.size)} in ${((Date.now() - t) / 1000).toFixed(1)}s`,
          );
          return l;
        });
        this.layers.set(key, layer);
      }
      layers.push({ ...(await layer), comment });
    }
    const architecture = ociArchitecture();
    const config = imageConfig(spec.config, layers, new Date(this.epoch * 1000), architecture);
    const { files, manifest } = archiveFiles({ ref, architecture, config, layers });
    this.progress(`${spec.name}: writing ${archive}`);
    const archiveSize = await writeArchive(archive, files, this.epoch);
    const image: BuildRecord['image'] = {
      name: fullName(ref),
      imageId: config.digest,
      manifestDigest: manifest.digest,
      archiveSize,
      compressedSize: layers.reduce((n, l) => n + l.size, config.size + manifest.size),
      uncompressedSize: layers.reduce((n, l) => n + l.uncompressedSize, 0),
      layers: layers.map((l) => ({
        comment: l.comment,
        digest: l.digest,
        diffId: l.diffId,
        size: l.size,
        uncompressedSize: l.uncompressedSize,
      })),
    };
    const st = fs.statSync(archive);
    const newRecord: BuildRecord = {
      fingerprint,
      inputs: Object.fromEntries([...inputs].sort(([a], [b]) => (a < b ? -1 : 1))),
      archive: { size: st.size, mtimeMs: st.mtimeMs },
      image,
    };
    fs.writeFileSync(recordPath(archive), `${JSON.stringify(newRecord, null, 2)}\n`);
    this.progress(`${spec.name}: built in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    return { ...image, archive, reused: false };
  }

  /** Writes the image's root filesystem into `dir` (owners set when running as root). */
  async stage(spec: ImageSpec, dir: string): Promise<void> {
    const layers = await this.resolve(spec, new Map());
    stageEntries(layers.flat(), dir, { owners: process.getuid?.() === 0 });
  }

  close(): void {
    this.host.close();
  }
}

/** Builds one image (a session of one). */
export async function buildImage(
  spec: ImageSpec,
  archive: string,
  options: BuildOptions = {},
): Promise<BuiltImage> {
  const session = new BuildSession(options);
  try {
    return await session.build(spec, archive);
  } finally {
    session.close();
  }
}
