// The images the lab's node runs: the lab's own (pause, CoreDNS, echo, shell; lab/images/) in the state
// directory, and tp's image at the path `npm run image` writes it (dist/image/), so the traffic manager,
// the agents and tp-init run from that very archive. Both are reused while their inputs are unchanged
// (a warm call reads build records only).
import * as path from 'node:path';
import { BuildSession } from '../image/build.js';
import { defaultArchivePath, tpImageSpec } from '../image/tp-image.js';
import type { LabLayout } from './components.js';
import { buildLabImages, type LabImageKey } from './images/build.js';
import type { NodeImage } from './node-runtime.js';

export interface KeyedNodeImage extends NodeImage {
  key: LabImageKey;
}

export async function nodeImages(l: LabLayout, say: (msg: string) => void): Promise<KeyedNodeImage[]> {
  const progress = (line: string) => say(line);
  const lab = await buildLabImages(l.paths.images, { coredns: path.join(l.bin, 'coredns'), progress });
  const spec = await tpImageSpec();
  const session = new BuildSession({ progress });
  try {
    const tp = await session.build(spec, defaultArchivePath(spec.name));
    return [
      ...lab.map(({ key, name, archive, manifestDigest }) => ({ key, name, archive, manifestDigest })),
      { key: 'tp' as const, name: tp.name, archive: tp.archive, manifestDigest: tp.manifestDigest },
    ];
  } finally {
    session.close();
  }
}

/** The image a key names, for the objects the lab applies (CoreDNS's Deployment). */
export function imageNamed(images: KeyedNodeImage[], key: LabImageKey): string {
  const image = images.find((i) => i.key === key);
  if (!image) throw new Error(`the lab built no ${key} image`);
  return image.name;
}
