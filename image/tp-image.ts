// tp's image, tp/tp:<version>: one image for tp-manager, tp-agent and tp-init (the container's command
// picks one, as upstream's single tel2 image does). /opt/tp holds the esbuild bundles of this checkout
// (dist/bundle), the eBPF object beside them (bpf/loader.ts looks next to the running bundle), and the
// part of koffi that runs here (its JS and the linux native build for this architecture).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as YAML from 'yaml';
import { AGENT_NODE_FLAGS } from '../agent/node-flags.js';
import { MANAGER_NODE_FLAGS } from '../manager/node-flags.js';
import { UsageError } from '../netaddr/parse.js';
import { VERSION } from '../version/version.js';
import type { ImageSpec } from './build.js';
import { nodeVersion } from './host.js';
import {
  accountFiles,
  baseLayer,
  busyboxLayer,
  DEFAULT_PATH,
  NOBODY,
  nodeRuntimeLayer,
  ROOT,
} from './layers.js';
import { multiarchTriplet } from './platform.js';
import { archiveFileName, parseReference } from './reference.js';
import type { LayerSpec, RootfsItem } from './rootfs.js';

export const TP_REPOSITORY = 'tp/tp';
export const TP_BINARIES = ['tp-manager', 'tp-agent', 'tp-agent-holder', 'tp-init'] as const;
/** The agent's UID in the chart (agent.uid) and the image's default user. */
export const TP_UID = 7777;
export const TP_HOME = '/opt/tp';

/** The bundles of dist/bundle the image runs, and the eBPF object that goes beside them. */
const BUNDLES: Record<(typeof TP_BINARIES)[number], string> = {
  'tp-manager': 'tp-manager.mjs',
  'tp-agent': 'tp-agent.cjs',
  // PID 1 of the agent container: holds the listening sockets, runs tp-agent (agent/holder.ts).
  'tp-agent-holder': 'tp-agent-holder.cjs',
  'tp-init': 'tp-init.mjs',
};
const BPF_OBJECTS = ['tp_steer.bpf.o'];
/** Files the bundles load at run time: tp-agent starts its passthrough thread from this one. */
const SUPPORT = ['tp-agent-passthrough.cjs'];

/** The tp checkout this file belongs to (dist/image/tp-image.js -> ../..). */
export function checkoutRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** Where `npm run image` writes an image's archive by default: dist/image/<name>-<tag>.tar of this checkout. */
export function defaultArchivePath(imageName: string): string {
  return path.join(checkoutRoot(), 'dist', 'image', archiveFileName(parseReference(imageName)));
}

/** Node's own flag on a launcher's shebang line (one at most: the kernel passes one argument). */
const NODE_FLAG: Partial<Record<(typeof TP_BINARIES)[number], string>> = {
  'tp-agent': AGENT_NODE_FLAGS[0],
  'tp-manager': MANAGER_NODE_FLAGS[0],
};

/**
 * /usr/local/bin/NAME: a script node runs with "--" before it (the shebang's one argument), so Node
 * reads none of the arguments that follow (Node 20 reads --env-file anywhere on its command line
 * otherwise): every flag reaches the tp binary. tp-agent takes no arguments (its configuration is its
 * environment): its shebang carries its Node flag instead (agent/node-flags.ts). So does tp-manager
 * (manager/node-flags.ts): the chart runs it without arguments, the uninstall hook with
 * `uninstall-agents`, and none of its flags is one Node 20 would read after the script.
 */
export function launcher(binary: (typeof TP_BINARIES)[number]): string {
  const flag = NODE_FLAG[binary];
  return [
    `#!/usr/local/bin/node ${flag ?? '--'}`,
    flag
      ? `// ${binary} in tp's image, run with ${flag}.`
      : `// ${binary} in tp's image: "--" ends Node's own options, so every argument is ${binary}'s.`,
    `import(${JSON.stringify(`${TP_HOME}/${BUNDLES[binary]}`)});`,
    '',
  ].join('\n');
}

/**
 * koffi's files that run here: the JS entry points (import and require) and the native build for
 * linux/<arch> with glibc; the other platforms' builds and koffi's C++ sources stay out.
 */
function koffiItems(root: string): RootfsItem[] {
  const native = `@koromix/koffi-linux-${process.arch}`;
  const files: [string, boolean][] = [
    ...['package.json', 'LICENSE.txt', 'index.js', 'index.cjs'].map((f) => `koffi/${f}`),
    ...['index.js', 'index.cjs', 'src/static.js', 'src/static.cjs'].map((f) => `koffi/src/koffi/${f}`),
    ...['package.json', 'index.js'].map((f) => `${native}/${f}`),
  ].map((f) => [f, false]);
  files.push([`${native}/linux_${process.arch}/koffi.node`, true]);
  return files.map(([f, addon]) => {
    const from = path.join(root, 'node_modules', f);
    if (!fs.existsSync(from))
      throw new UsageError(`${from} is missing: run npm ci (koffi and ${native} must be installed)`);
    return { copy: from, to: `${TP_HOME}/node_modules/${f}`, mode: 0o644, libraries: addon };
  });
}

/** iptables with both backends, named as Debian names them, and libbpf for the eBPF mechanism. */
export function captureToolsLayer(triplet: string): LayerSpec {
  const links: RootfsItem[] = [];
  for (const family of ['iptables', 'ip6tables']) {
    for (const suffix of ['', '-save', '-restore']) {
      for (const backend of ['nft', 'legacy'])
        links.push({
          symlink: `/usr/sbin/${family}-${backend}${suffix}`,
          target: `xtables-${backend}-multi`,
        });
      // The plain names: nft, Debian's default alternative.
      links.push({ symlink: `/usr/sbin/${family}${suffix}`, target: 'xtables-nft-multi' });
    }
  }
  return {
    comment: 'capture tools: iptables (nft and legacy) and libbpf',
    items: [
      { copy: '/usr/sbin/xtables-nft-multi', libraries: true, package: 'iptables' },
      { copy: '/usr/sbin/xtables-legacy-multi', libraries: true, package: 'iptables' },
      // Extensions (-m comment, -m owner, REDIRECT, …) are dlopen()ed by path.
      { copyDir: `/usr/lib/${triplet}/xtables`, suffix: '.so', libraries: true, package: 'iptables' },
      ...links,
      // dlopen()ed by bpf/libbpf.ts through koffi, by name: found through /etc/ld.so.cache.
      { copy: `/usr/lib/${triplet}/libbpf.so.1`, libraries: true, package: 'libbpf1' },
    ],
  };
}

/** OpenSSH's sftp-server: the agent runs one per remote mount (agent/file-server.ts), never sshd. */
export function fileServerLayer(): LayerSpec {
  return {
    comment: 'remote mounts: OpenSSH sftp-server',
    items: [{ copy: '/usr/lib/openssh/sftp-server', libraries: true, package: 'openssh-sftp-server' }],
  };
}

export interface TpImageOptions {
  /** The node binary to ship; default the one running this build. */
  node?: string;
  /** Default tp/tp:<version/version.ts>. */
  name?: string;
  /** The checkout whose dist/bundle and node_modules go in; default this one. */
  root?: string;
}

function chartFacts(root: string): { appVersion: string; home: string | undefined } {
  const file = path.join(root, 'charts', 'tp', 'Chart.yaml');
  const chart = YAML.parse(fs.readFileSync(file, 'utf8')) as { appVersion?: unknown; home?: unknown };
  return {
    appVersion: String(chart.appVersion),
    home: typeof chart.home === 'string' ? chart.home : undefined,
  };
}

export async function tpImageSpec(options: TpImageOptions = {}): Promise<ImageSpec> {
  const root = options.root ?? checkoutRoot();
  const node = options.node ?? process.execPath;
  const triplet = multiarchTriplet();
  const nodeVer = await nodeVersion(node);
  const chart = chartFacts(root);
  if (chart.appVersion !== VERSION) {
    throw new UsageError(
      `charts/tp/Chart.yaml has appVersion ${chart.appVersion} but version/version.ts says ${VERSION}: the chart's default image tag is its appVersion, keep them equal`,
    );
  }
  const bundleDir = path.join(root, 'dist', 'bundle');
  const bundled = [...Object.values(BUNDLES), ...SUPPORT, ...BPF_OBJECTS];
  const absent = bundled.filter((f) => !fs.existsSync(path.join(bundleDir, f)));
  if (absent.length > 0)
    throw new UsageError(
      `${absent.map((f) => `dist/bundle/${f}`).join(', ')} missing: run node build.mjs first`,
    );

  const tpAccount = { name: 'tp', uid: TP_UID, gid: TP_UID, home: '/home/tp' };
  const labels: Record<string, string> = {
    'org.opencontainers.image.title': 'tp',
    'org.opencontainers.image.description':
      'tp-manager, tp-agent and tp-init; the container command picks one',
    'org.opencontainers.image.version': VERSION,
    'org.opencontainers.image.licenses': 'Apache-2.0',
  };
  if (chart.home !== undefined) labels['org.opencontainers.image.source'] = chart.home;
  return {
    name: options.name ?? `${TP_REPOSITORY}:${VERSION}`,
    libraryDirs: [`/usr/lib/${triplet}`],
    layers: [
      baseLayer(),
      nodeRuntimeLayer(node, nodeVer),
      busyboxLayer(),
      captureToolsLayer(triplet),
      fileServerLayer(),
      {
        comment: `tp ${VERSION}: tp-manager, tp-agent, tp-init`,
        items: [
          ...bundled.map((f) => ({ copy: path.join(bundleDir, f), to: `${TP_HOME}/${f}`, mode: 0o644 })),
          ...koffiItems(root),
          ...TP_BINARIES.map((b) => ({ file: `/usr/local/bin/${b}`, data: launcher(b), mode: 0o755 })),
          ...accountFiles([ROOT, tpAccount, NOBODY]),
          { dir: '/home/tp', mode: 0o755, uid: TP_UID, gid: TP_UID },
        ],
      },
    ],
    config: {
      user: `${TP_UID}:${TP_UID}`,
      env: [DEFAULT_PATH],
      workingDir: '/',
      cmd: ['tp-manager', '--help'],
      labels,
    },
  };
}
