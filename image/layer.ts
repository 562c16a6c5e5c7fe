// One layer: the entries as a tar, its sha256 (the diff ID), gzip (node:zlib, default level: the same
// bytes for the same tar with the same Node build), and the sha256 of that (the blob's digest).
import { createHash, type Hash } from 'node:crypto';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import type { LayerBlob } from './oci.js';
import type { RootfsEntry } from './rootfs.js';
import { type TarEntry, tarStream } from './tar.js';

export interface BuiltLayer extends LayerBlob {
  data: Buffer;
}

/** Passes bytes through, hashing and counting them. */
class Measure extends Transform {
  readonly hash: Hash = createHash('sha256');
  size = 0;
  override _transform(
    chunk: Buffer,
    _encoding: BufferEncoding,
    done: (err?: Error | null, data?: Buffer) => void,
  ) {
    this.hash.update(chunk);
    this.size += chunk.length;
    done(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

export function tarEntry(entry: RootfsEntry): TarEntry {
  const name = entry.path.slice(1);
  if (entry.type === 'dir')
    return { type: 'directory', name, mode: entry.mode, uid: entry.uid, gid: entry.gid };
  if (entry.type === 'symlink') return { type: 'symlink', name, target: entry.target, uid: 0, gid: 0 };
  const content =
    'data' in entry.source ? entry.source.data : { path: entry.source.host, size: entry.source.size };
  return { type: 'file', name, mode: entry.mode, uid: entry.uid, gid: entry.gid, content };
}

export async function buildLayer(
  entries: RootfsEntry[],
  comment: string,
  mtimeSeconds: number,
): Promise<BuiltLayer> {
  const uncompressed = new Measure();
  const compressed = new Measure();
  const chunks: Buffer[] = [];
  await pipeline(
    tarStream(entries.map(tarEntry), mtimeSeconds),
    uncompressed,
    zlib.createGzip(),
    compressed,
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    }),
  );
  return {
    digest: compressed.digest(),
    size: compressed.size,
    diffId: uncompressed.digest(),
    uncompressedSize: uncompressed.size,
    comment,
    data: Buffer.concat(chunks),
  };
}
