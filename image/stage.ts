// Writes resolved entries into a directory on the host: the root ldconfig builds the image's
// /etc/ld.so.cache in, and the rootfs the Dockerfile copies (`--stage DIR`). Owners are set only when
// asked (as root); modes always.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RootfsEntry } from './rootfs.js';

export function stageEntries(entries: RootfsEntry[], root: string, options: { owners: boolean }): void {
  for (const entry of entries) {
    const target = path.join(root, entry.path);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    if (entry.type === 'dir') {
      fs.mkdirSync(target, { recursive: true });
    } else {
      fs.rmSync(target, { force: true });
      if (entry.type === 'symlink') fs.symlinkSync(entry.target, target);
      else if ('data' in entry.source) fs.writeFileSync(target, entry.source.data);
      else fs.copyFileSync(entry.source.host, target);
    }
    if (entry.type !== 'symlink') fs.chmodSync(target, entry.mode);
    if (options.owners) {
      const uid = entry.type === 'symlink' ? 0 : entry.uid;
      const gid = entry.type === 'symlink' ? 0 : entry.gid;
      fs.lchownSync(target, uid, gid);
    }
  }
}
