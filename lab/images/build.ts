// The lab's images for its real node (kubelet + containerd): the sandbox (pause) image containerd is
// configured with, CoreDNS, the echo server and a shell. Built by image/ from this host's files, one
// archive each in `outDir`, reused while nothing they are made of has changed (a warm call only reads
// the build records and stats the files they name).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BuildSession, type ImageSpec } from '../../image/build.js';
import { currentSignature, findTool, nodeVersion, run } from '../../image/host.js';
import {
  accountFiles,
  baseLayer,
  busyboxLayer,
  DEFAULT_PATH,
  NOBODY,
  nodeRuntimeLayer,
  ROOT,
} from '../../image/layers.js';
import { multiarchTriplet } from '../../image/platform.js';
import { archiveFileName, parseReference } from '../../image/reference.js';
import { tpImageSpec } from '../../image/tp-image.js';
import { UsageError } from '../../netaddr/parse.js';

export const PAUSE_IMAGE = 'registry.k8s.io/pause:3.10';
export const ECHO_IMAGE = 'lab/echo:1';
export const SHELL_IMAGE = 'lab/shell:1';
/** lab/coredns:<the binary's own version>, e.g. lab/coredns:1.14.2. */
export const COREDNS_REPOSITORY = 'lab/coredns';

/** `tp` only with the `tp` option. */
export type LabImageKey = 'pause' | 'coredns' | 'echo' | 'shell' | 'tp';

export interface LabImage {
  key: LabImageKey;
  /** Fully qualified, as containerd names it after import: docker.io/lab/echo:1. */
  name: string;
  /** The archive (OCI layout + docker-archive) for `ctr -n k8s.io images import`. */
  archive: string;
  imageId: string;
  manifestDigest: string;
  /** true: the archive from an earlier call was still current. */
  reused: boolean;
}

export interface LabImagesOptions {
  /** The lab's CoreDNS binary (static Go), e.g. `${labBinDir}/coredns`. */
  coredns: string;
  /** The node binary for the echo and shell images; default the one running this. */
  node?: string;
  /** Progress lines while something is built (a warm call prints nothing). */
  progress?: (line: string) => void;
  /** Build even when the archives are current. */
  force?: boolean;
  /**
   * Also tp's own image, tp/tp:<version> from this checkout's build (image/tp-image.ts), in the same
   * session: it shares the base and node runtime layers with echo and shell.
   */
  tp?: boolean;
}

/** This checkout (dist/lab/images/build.js -> ../../..). */
function checkoutRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

/**
 * The pause binary, compiled once per source, compiler and C library (gcc -static): kept in
 * outDir/pause-bin under a name derived from them, so a warm call compiles nothing.
 */
async function pauseBinary(outDir: string, root: string): Promise<string> {
  const source = path.join(root, 'lab', 'images', 'pause', 'pause.c');
  if (!fs.existsSync(source)) throw new UsageError(`${source} is missing: is this a complete tp checkout?`);
  const gcc = findTool('gcc');
  const flags = ['-static', '-O2', '-s', '-Wall', '-Werror'];
  const key = createHash('sha256')
    .update(fs.readFileSync(source))
    .update(flags.join(' '))
    .update(currentSignature(fs.realpathSync(gcc)))
    .update(currentSignature(`/usr/lib/${multiarchTriplet()}/libc.a`))
    .digest('hex')
    .slice(0, 16);
  const dir = path.join(outDir, 'pause-bin');
  const binary = path.join(dir, `pause-${key}`);
  if (fs.existsSync(binary)) return binary;
  fs.mkdirSync(dir, { recursive: true });
  const scratch = `${binary}.partial-${process.pid}`;
  const r = await run(gcc, [...flags, '-o', scratch, source]);
  if (r.code !== 0) {
    fs.rmSync(scratch, { force: true });
    const hint = /cannot find -lc|libc\.a/.test(r.stderr)
      ? ': install libc6-dev (apt-get install libc6-dev)'
      : '';
    throw new UsageError(`compiling the lab's pause program failed${hint}:\n${r.stderr.trim()}`);
  }
  fs.renameSync(scratch, binary);
  // Binaries of earlier sources or compilers.
  for (const old of fs.readdirSync(dir))
    if (path.join(dir, old) !== binary) fs.rmSync(path.join(dir, old), { force: true });
  return binary;
}

/** CoreDNS's version as the binary reports it (CoreDNS-1.14.2): the image's tag. */
async function corednsVersion(binary: string): Promise<string> {
  if (!fs.existsSync(binary))
    throw new UsageError(`${binary} is missing: build the lab's binaries first (bash lab/build.sh)`);
  const r = await run(binary, ['-version']);
  const version = /CoreDNS-(\S+)/.exec(r.stdout)?.[1];
  if (r.code !== 0 || version === undefined)
    throw new UsageError(`${binary} -version answered ${JSON.stringify(r.stdout.trim())}: is it CoreDNS?`);
  return version;
}

export interface LabImageInputs {
  pause: string;
  coredns: string;
  corednsVersion: string;
  node: string;
  nodeVersion: string;
  echoBundle: string;
  triplet: string;
}

/** The four images' specs (pure, given where their files are). */
export function labImageSpecs(i: LabImageInputs): Record<Exclude<LabImageKey, 'tp'>, ImageSpec> {
  const libraryDirs = [`/usr/lib/${i.triplet}`];
  const accounts = accountFiles([ROOT, NOBODY]);
  return {
    pause: {
      name: PAUSE_IMAGE,
      layers: [
        baseLayer(),
        { comment: 'pause', items: [{ copy: i.pause, to: '/pause', mode: 0o755 }, ...accounts] },
      ],
      // As upstream's pause image: nobody's UID; it needs no privilege.
      config: { user: '65535:65535', entrypoint: ['/pause'], workingDir: '/' },
    },
    coredns: {
      name: `${COREDNS_REPOSITORY}:${i.corednsVersion}`,
      layers: [
        baseLayer(),
        {
          comment: `CoreDNS ${i.corednsVersion}`,
          items: [{ copy: i.coredns, to: '/coredns', mode: 0o755 }, ...accounts],
        },
      ],
      config: { entrypoint: ['/coredns'], env: [DEFAULT_PATH], workingDir: '/' },
    },
    echo: {
      name: ECHO_IMAGE,
      libraryDirs,
      layers: [
        baseLayer(),
        nodeRuntimeLayer(i.node, i.nodeVersion),
        {
          comment: 'lab/echo: an HTTP server answering $TEXT on $PORT',
          items: [{ copy: i.echoBundle, to: '/opt/lab/echo.cjs', mode: 0o644 }, ...accounts],
        },
      ],
      // "--": Node reads none of the arguments a pod adds.
      config: {
        entrypoint: ['/usr/local/bin/node', '--', '/opt/lab/echo.cjs'],
        env: [DEFAULT_PATH],
        workingDir: '/',
      },
    },
    shell: {
      name: SHELL_IMAGE,
      libraryDirs,
      layers: [
        baseLayer(),
        nodeRuntimeLayer(i.node, i.nodeVersion),
        busyboxLayer(),
        {
          comment: 'curl',
          items: [{ copy: '/usr/bin/curl', libraries: true, package: 'curl' }, ...accounts],
        },
      ],
      config: { cmd: ['sh'], env: [DEFAULT_PATH], workingDir: '/' },
    },
  };
}

/**
 * Builds (or reuses) the lab's images into `outDir`: one archive per image, named after it
 * (pause-3.10.tar, lab-coredns-1.14.2.tar, lab-echo-1.tar, lab-shell-1.tar, tp-tp-<version>.tar), each
 * with its build record beside it. The echo server (and tp) come from this checkout's build (node build.mjs).
 */
export async function buildLabImages(outDir: string, options: LabImagesOptions): Promise<LabImage[]> {
  const root = checkoutRoot();
  const node = options.node ?? process.execPath;
  const echoBundle = path.join(root, 'dist', 'bundle', 'lab-echo.cjs');
  if (!fs.existsSync(echoBundle)) throw new UsageError(`${echoBundle} is missing: run node build.mjs first`);
  fs.mkdirSync(outDir, { recursive: true });
  const specs: Partial<Record<LabImageKey, ImageSpec>> = labImageSpecs({
    pause: await pauseBinary(outDir, root),
    coredns: options.coredns,
    corednsVersion: await corednsVersion(options.coredns),
    node,
    nodeVersion: await nodeVersion(node),
    echoBundle,
    triplet: multiarchTriplet(),
  });
  if (options.tp) specs.tp = await tpImageSpec({ node, root });
  const session = new BuildSession({ progress: options.progress, force: options.force });
  try {
    const images: LabImage[] = [];
    for (const [key, spec] of Object.entries(specs) as [LabImageKey, ImageSpec][]) {
      const archive = path.join(outDir, archiveFileName(parseReference(spec.name)));
      const built = await session.build(spec, archive);
      images.push({
        key,
        name: built.name,
        archive: built.archive,
        imageId: built.imageId,
        manifestDigest: built.manifestDigest,
        reused: built.reused,
      });
    }
    return images;
  } finally {
    session.close();
  }
}
