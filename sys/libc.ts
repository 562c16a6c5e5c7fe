// The C library through koffi (no native addon of tp's own), loaded on first use: a process that never
// needs it (an agent with one app port per listener and no orphans to reap) stays smaller.
// agent/original-dst.ts (getsockopt), agent/reaper.ts (waitid, waitpid, prctl), agent/passthrough*.ts and
// descriptor.ts (dup) declare their functions on it.
import { createRequire } from 'node:module';

/** A koffi library handle: `func('int name(int a, …)')` declares a C function. */
export interface Libc {
  func(signature: string): (...args: unknown[]) => number;
  /** errno as the last call through koffi on this thread left it. */
  errno(): number;
}

let libc: Libc | undefined;

/** libc.so.6 (throws when koffi or its native build is missing). */
export function loadLibc(): Libc {
  if (libc) return libc;
  // createRequire keeps this working both from dist/ (ESM) and from the esbuild bundles (CJS): in a bundle
  // __filename exists; in ESM the process's entry script is a fine anchor for resolving node_modules/koffi.
  const anchor = typeof __filename === 'string' ? __filename : (process.argv[1] ?? `${process.cwd()}/`);
  const koffi = createRequire(anchor)('koffi') as {
    load(name: string): Pick<Libc, 'func'>;
    errno(): number;
  };
  const lib = koffi.load('libc.so.6');
  libc = { func: (signature) => lib.func(signature), errno: () => koffi.errno() };
  return libc;
}
