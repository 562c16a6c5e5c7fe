// Deterministic tar writing (tar-stream): the caller gives the entries in their final order; every
// header has the same mtime, numeric owners and no user/group names, so the same entries give the
// same bytes. Used for the layers and for the archive that holds them.
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';

export type TarEntry =
  | { type: 'directory'; name: string; mode: number; uid: number; gid: number }
  | { type: 'symlink'; name: string; target: string; uid: number; gid: number }
  | {
      type: 'file';
      name: string;
      mode: number;
      uid: number;
      gid: number;
      /** The bytes, or a host file to read them from (checked against `size`). */
      content: Buffer | { path: string; size: number };
    };

async function contentOf(entry: Extract<TarEntry, { type: 'file' }>): Promise<Buffer> {
  if (Buffer.isBuffer(entry.content)) return entry.content;
  const data = await fs.promises.readFile(entry.content.path);
  if (data.length !== entry.content.size) {
    throw new Error(
      `${entry.content.path} changed while the image was being built (${entry.content.size} bytes, now ${data.length}): build again`,
    );
  }
  return data;
}

async function produce(pack: tar.Pack, entries: TarEntry[], mtime: Date): Promise<void> {
  for (const entry of entries) {
    const common = { uid: entry.uid, gid: entry.gid, mtime, uname: '', gname: '' };
    const added = (resolve: () => void, reject: (e: Error) => void) => (err?: Error | null) =>
      err ? reject(err) : resolve();
    if (entry.type === 'file') {
      const data = await contentOf(entry);
      await new Promise<void>((resolve, reject) =>
        pack.entry(
          { ...common, name: entry.name, type: 'file', mode: entry.mode, size: data.length },
          data,
          added(resolve, reject),
        ),
      );
    } else if (entry.type === 'directory') {
      const name = entry.name.endsWith('/') ? entry.name : `${entry.name}/`;
      await new Promise<void>((resolve, reject) =>
        pack.entry({ ...common, name, type: 'directory', mode: entry.mode }, added(resolve, reject)),
      );
    } else {
      await new Promise<void>((resolve, reject) =>
        pack.entry(
          { ...common, name: entry.name, type: 'symlink', mode: 0o777, linkname: entry.target },
          added(resolve, reject),
        ),
      );
    }
  }
  pack.finalize();
}

/**
 * The tar of `entries`, in the order given, as a stream to pipe into a hash, gzip or a file. A host file
 * that cannot be read (or changed size) fails the stream.
 */
export function tarStream(entries: TarEntry[], mtimeSeconds: number): Readable {
  const pack = tar.pack();
  produce(pack, entries, new Date(mtimeSeconds * 1000)).catch((err: Error) => pack.destroy(err));
  return Readable.from(pack);
}
