// What `ldd` says an ELF file needs: its shared libraries as the host's dynamic loader resolves them,
// and the loader itself. Pure: host.ts runs ldd and hands its output (stdout and stderr) here.
import { UsageError } from '../netaddr/parse.js';

export interface LddLibrary {
  /** The name the file asks for (its DT_NEEDED), e.g. libc.so.6. */
  name: string;
  /** Where the host's loader found it, e.g. /lib/x86_64-linux-gnu/libc.so.6. */
  path: string;
}

export type LddResult =
  | { kind: 'static' }
  | {
      kind: 'dynamic';
      /** The whole closure: ldd lists indirect dependencies too. */
      libraries: LddLibrary[];
      /** The dynamic loader (PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2. */
      loader: string | undefined;
      /** Names the host's loader could not find. */
      missing: string[];
    };

const ADDRESS = String.raw`\(0x[0-9a-f]+\)`;
const found = new RegExp(String.raw`^(\S+) => (/\S.*?) ${ADDRESS}$`);
const notFound = /^(\S+) => not found$/;
// The vDSO has no file (linux-vdso.so.1, linux-gate.so.1); old glibc printed it with an empty "=>".
const virtual = new RegExp(String.raw`^([^/\s]+)(?: =>\s*)? ${ADDRESS}$`);
const loader = new RegExp(String.raw`^(/\S.*?) ${ADDRESS}$`);

/** Parses `ldd FILE` output (stdout and stderr together) and its exit code. */
export function parseLdd(output: string, exitCode: number, file: string): LddResult {
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  // glibc's ldd: "not a dynamic executable" (exit 1) for static binaries, "statically linked" for static-pie.
  if (lines.some((l) => l === 'not a dynamic executable' || l === 'statically linked'))
    return { kind: 'static' };
  const failure = lines.find((l) => l.startsWith('ldd:'));
  if (exitCode !== 0 || failure !== undefined) {
    throw new UsageError(`ldd ${file} failed (exit ${exitCode}): ${failure ?? lines.join('; ')}`);
  }
  const libraries: LddLibrary[] = [];
  const missing: string[] = [];
  let interpreter: string | undefined;
  for (const line of lines) {
    let m = found.exec(line);
    if (m) {
      libraries.push({ name: m[1]!, path: m[2]! });
      continue;
    }
    m = notFound.exec(line);
    if (m) {
      missing.push(m[1]!);
      continue;
    }
    if (virtual.test(line)) continue;
    m = loader.exec(line);
    if (m) {
      interpreter = m[1]!;
      continue;
    }
    throw new UsageError(`ldd ${file}: cannot read the line ${JSON.stringify(line)}`);
  }
  return { kind: 'dynamic', libraries, loader: interpreter, missing };
}

/** The host files an ELF file needs at run time (libraries and loader); fails naming what is missing. */
export function closureFiles(result: LddResult, file: string): string[] {
  if (result.kind === 'static') return [];
  if (result.missing.length > 0) {
    throw new UsageError(
      `${file} needs ${result.missing.join(', ')}, which the host's dynamic loader cannot find: install the package that provides ${result.missing.length === 1 ? 'it' : 'them'} (apt-file search ${result.missing[0]})`,
    );
  }
  const files = result.libraries.map((l) => l.path);
  if (result.loader !== undefined) files.push(result.loader);
  return files;
}
