// Scratch files and directories a build is using right now (a partial archive, stripped binaries, the
// staging root for ldconfig): removed when the build ends, and by removeScratch() when a signal ends
// the process first.
import * as fs from 'node:fs';

const paths = new Set<string>();

export function trackScratch(path: string): void {
  paths.add(path);
}

export function releaseScratch(path: string): void {
  fs.rmSync(path, { recursive: true, force: true });
  paths.delete(path);
}

export function removeScratch(): void {
  for (const path of [...paths]) releaseScratch(path);
}
