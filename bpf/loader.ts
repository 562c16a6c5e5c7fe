// The loader of tp_steer: opens and loads the compiled object, pins its maps, program and netns link in
// bpffs, and reads back what is pinned. Every call is synchronous (libbpf through koffi).
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BpfError, check, checkPointer, libbpf } from './libbpf.js';
import { closeFd, type LinkInfo, linkInfo, openPinned, type ProgramInfo, programInfo } from './objects.js';
import { LINK_PIN, LISTENERS_MAP, PORTS_MAP, PROGRAM_NAME, PROGRAM_PIN, STATS_MAP } from './steering-keys.js';

/** The compiled program beside this file (dist/bpf/), unless TP_BPF_OBJECT names another. */
export function defaultObjectPath(): string {
  return process.env.TP_BPF_OBJECT || fileURLToPath(new URL('./tp_steer.bpf.o', import.meta.url));
}

/** tp_steer loaded into the kernel but not yet pinned or attached; close() frees whatever is not pinned. */
export class LoadedProgram {
  private closed = false;

  private constructor(
    private readonly obj: unknown,
    private readonly prog: unknown,
    readonly info: ProgramInfo,
  ) {}

  static load(objectPath: string): LoadedProgram {
    if (!fs.existsSync(objectPath)) {
      throw new BpfError(
        `the eBPF program ${objectPath} is missing: build it with \`node build.mjs\` (needs clang and libbpf-dev)`,
        2,
      );
    }
    const bpf = libbpf();
    const obj = checkPointer(bpf.objectOpenFile(objectPath), `opening ${objectPath}`);
    try {
      check(bpf.objectLoad(obj), `loading ${objectPath} into the kernel`);
      const prog = checkPointer(bpf.findProgram(obj, PROGRAM_NAME), `finding program ${PROGRAM_NAME}`);
      return new LoadedProgram(obj, prog, programInfo(bpf.programFd(prog)));
    } catch (err) {
      bpf.objectClose(obj);
      throw err;
    }
  }

  /** Pins the three maps and the program under dir (which must exist). */
  pinObjects(dir: string): void {
    const bpf = libbpf();
    for (const name of [PORTS_MAP, LISTENERS_MAP, STATS_MAP]) {
      const map = checkPointer(bpf.findMap(this.obj, name), `finding map ${name}`);
      check(bpf.mapPin(map, `${dir}/${name}`), `pinning map ${name} at ${dir}/${name}`);
    }
    check(bpf.programPin(this.prog, `${dir}/${PROGRAM_PIN}`), `pinning the program at ${dir}/${PROGRAM_PIN}`);
  }

  /**
   * Attaches the program to the network namespace open at netnsFd and pins the link at dir/link. The
   * pinned link keeps the attachment alive after this process exits.
   */
  attachAndPin(netnsFd: number, dir: string): LinkInfo {
    const bpf = libbpf();
    const link = checkPointer(
      bpf.attachNetns(this.prog, netnsFd),
      'attaching the sk_lookup program to the network namespace',
    );
    try {
      check(bpf.linkPin(link, `${dir}/${LINK_PIN}`), `pinning the link at ${dir}/${LINK_PIN}`);
      const fd = openPinned(`${dir}/${LINK_PIN}`)!;
      try {
        return linkInfo(fd);
      } finally {
        closeFd(fd);
      }
    } finally {
      // Frees libbpf's handle and its fd; the attachment stays as long as the pin exists.
      bpf.linkDestroy(link);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libbpf().objectClose(this.obj);
  }
}
