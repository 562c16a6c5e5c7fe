// Assembles where everything is for one lab: state paths, binaries, this checkout's dist/ entries.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LabApiClient } from './api.js';
import type { LabLayout } from './components.js';
import { hostApiPort, labPaths } from './paths.js';

/** dist/ of this checkout (this file is dist/lab/layout.js). */
export function distDir(): string {
  return path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
}

export function labLayout(bin: string, root?: string): LabLayout {
  const dist = distDir();
  return {
    bin,
    paths: labPaths(root),
    labMain: path.join(dist, 'lab', 'main.js'),
    hostApiPort: hostApiPort(),
  };
}

/** An admin client through the root namespace's forward (the path the host's kubectl takes). */
export function adminClient(l: LabLayout): LabApiClient {
  const pki = l.paths.pki;
  return new LabApiClient(`https://127.0.0.1:${l.hostApiPort}`, {
    ca: fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8'),
    cert: fs.readFileSync(path.join(pki, 'admin.crt'), 'utf8'),
    key: fs.readFileSync(path.join(pki, 'admin.key'), 'utf8'),
  });
}
