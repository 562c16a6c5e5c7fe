// The lab node's edges around containerd, the kubelet and CNI: preparing the host side before they start
// (configuration files, the pod bridge with its fixed MAC, the cgroup root), importing the node's images,
// writing the CNI network once the Node has a podCIDR, and taking every pod down again through the CRI
// (so CNI releases addresses and network namespaces) with whatever a crash left behind.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCommand } from './command.js';
import type { LabLayout } from './components.js';
import {
  bridgeMac,
  cniConflistFile,
  containerdConfigFile,
  gatewayOf,
  kubeletConfigFile,
  nodeResolvConfFile,
  renderCniConflist,
  renderContainerdConfig,
  renderKubeletConfig,
  renderNodeResolvConf,
} from './node-config.js';
import { type LabPaths, writeIfChanged } from './paths.js';
import { processStartTime, stopProcess } from './processes.js';
import { CGROUP_ROOT, CNI_NETWORK, CONTAINERD_K8S_NAMESPACE, NODE_NETNS, POD_BRIDGE } from './topology.js';

const CGROUP_FS = '/sys/fs/cgroup';
/** Where the kubelet links container logs (a fixed path in the kubelet); the lab removes its own links. */
const KUBELET_CONTAINER_LOG_LINKS = '/var/log/containers';
/** libcni's cache of ADD results (containerd 1.6 keeps the default); entries start with the network name. */
const CNI_RESULT_CACHE = '/var/lib/cni/results';
/**
 * Host directories the node's programs create at fixed paths (the kubelet's log links, libcni's cache,
 * the shims' sockets). `up` records which of them did not exist; `down` removes those, when empty.
 */
const HOST_DIRS = [
  KUBELET_CONTAINER_LOG_LINKS,
  CNI_RESULT_CACHE,
  '/var/lib/cni',
  '/run/containerd/s',
  '/run/containerd',
];
const hostDirsFile = (p: LabPaths) => path.join(p.root, 'host-dirs-created.json');

/** The directories the node writes to, created before containerd and the kubelet start. */
function nodeDirs(p: LabPaths): string[] {
  return [p.config, p.run, p.containerdRoot, p.containerdState, p.kubelet, p.podLogs, p.cniConf, p.cniIpam];
}

/** The cgroup v1 hierarchies mounted under /sys/fs/cgroup (cpu, memory, …, and name=systemd). */
export function cgroupHierarchies(mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const out: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const point = pre.split(' ')[4] ?? '';
    const fsType = post.split(' ')[0];
    // v1 hierarchies, the hybrid layout's cgroup2 at unified/, or a pure cgroup2 at /sys/fs/cgroup.
    const under = path.dirname(point) === CGROUP_FS || point === CGROUP_FS;
    if ((fsType === 'cgroup' || fsType === 'cgroup2') && under) out.push(point);
  }
  return out.sort();
}

/**
 * Everything the node needs on the host before containerd and the kubelet start: configuration files,
 * directories, the kubelet's cgroup root in every hierarchy, and the pod bridge with a fixed MAC (the
 * CNI bridge plugin adopts an existing bridge; one it created would change its MAC as pods come and go).
 */
export async function prepareNode(l: LabLayout): Promise<void> {
  const p = l.paths;
  for (const dir of nodeDirs(p)) fs.mkdirSync(dir, { recursive: true });
  writeIfChanged(containerdConfigFile(p), renderContainerdConfig(p, path.join(l.bin, 'cni')));
  writeIfChanged(kubeletConfigFile(p), renderKubeletConfig(p));
  writeIfChanged(nodeResolvConfFile(p), renderNodeResolvConf());
  if (!fs.existsSync(hostDirsFile(p))) {
    const missing = HOST_DIRS.filter((d) => !fs.existsSync(d));
    fs.writeFileSync(hostDirsFile(p), `${JSON.stringify(missing)}\n`);
  }
  const hierarchies = cgroupHierarchies();
  if (hierarchies.length === 0) {
    throw new Error(
      `no cgroup v1 hierarchy is mounted under ${CGROUP_FS}: the lab's kubelet runs with the cgroupfs driver on cgroup v1 (see docs/lab.md)`,
    );
  }
  for (const h of hierarchies) fs.mkdirSync(path.join(h, CGROUP_ROOT), { recursive: true });
}

/** The pod bridge in tplab-node, with its fixed MAC and the pods' gateway address, up. */
export async function ensureBridge(podCidr: string): Promise<void> {
  const gateway = gatewayOf(podCidr);
  const prefix = podCidr.split('/')[1];
  const ip = (...args: string[]) => runCommand(['ip', '-n', NODE_NETNS, ...args]);
  const mac = bridgeMac(gateway);
  const link = await runCommand(['ip', '-n', NODE_NETNS, '-o', 'link', 'show', 'dev', POD_BRIDGE], {
    check: false,
  });
  if (link.code !== 0) await ip('link', 'add', POD_BRIDGE, 'address', mac, 'type', 'bridge');
  else if (!link.stdout.includes(` link/ether ${mac} `))
    await ip('link', 'set', 'dev', POD_BRIDGE, 'address', mac);
  const addrs = await ip('-o', '-4', 'addr', 'show', 'dev', POD_BRIDGE);
  if (!addrs.stdout.includes(` ${gateway}/${prefix} `)) {
    await ip('addr', 'replace', `${gateway}/${prefix}`, 'dev', POD_BRIDGE);
  }
  await ip('link', 'set', POD_BRIDGE, 'up');
}

/** Writes the CNI network for the node's podCIDR; containerd picks it up and the kubelet reports Ready. */
export function writeCniNetwork(p: LabPaths, podCidr: string): boolean {
  const file = cniConflistFile(p);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  return writeIfChanged(file, renderCniConflist(p, podCidr));
}

const ctr = (p: LabPaths, ...args: string[]) =>
  runCommand(['ctr', `--address=${p.containerdSocket}`, `--namespace=${CONTAINERD_K8S_NAMESPACE}`, ...args], {
    timeoutMs: 120_000,
  });

/** Whether containerd answers on its socket. */
export async function containerdReady(p: LabPaths): Promise<boolean> {
  if (!fs.existsSync(p.containerdSocket)) return false;
  const r = await runCommand(['ctr', `--address=${p.containerdSocket}`, 'version'], {
    check: false,
    timeoutMs: 5_000,
  });
  return r.code === 0;
}

export interface NodeImage {
  /** The fully qualified name containerd stores (docker.io/tp/tp:0.1.0). */
  name: string;
  archive: string;
  /** The manifest digest the archive carries (sha256:…). */
  manifestDigest: string;
}

/** The images containerd holds in the k8s.io namespace: name -> target digest. */
export async function listNodeImages(p: LabPaths): Promise<Map<string, string>> {
  const r = await ctr(p, 'images', 'ls');
  const out = new Map<string, string>();
  for (const line of r.stdout.split('\n').slice(1)) {
    const [ref, , digest] = line.trim().split(/\s+/);
    if (ref && digest?.startsWith('sha256:')) out.set(ref, digest);
  }
  return out;
}

/**
 * Imports the images whose name does not already point at the archive's manifest (a rebuilt image
 * moves its tag; pods created afterwards run it). Returns the names imported.
 */
export async function importImages(p: LabPaths, images: NodeImage[]): Promise<string[]> {
  const present = await listNodeImages(p);
  const imported: string[] = [];
  for (const image of images) {
    if (present.get(image.name) === image.manifestDigest) continue;
    await importRetryingGcRace(p, image.archive);
    imported.push(image.name);
  }
  return imported;
}

/**
 * containerd's garbage collector runs after a tag moves (a rebuilt image leaves the old one's layers
 * unreferenced) and can remove a layer snapshot the import about to unpack takes for present: the import
 * then fails "parent snapshot … does not exist" (containerd issue 2382). Its next attempt unpacks the
 * layer again, so the race is retried a bounded number of times; any other failure is not.
 */
async function importRetryingGcRace(p: LabPaths, archive: string, attempts = 3): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await ctr(p, 'images', 'import', archive);
      return;
    } catch (err) {
      if (attempt >= attempts || !isGcRace(err)) throw err;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}

/** Whether an import failed on containerd's garbage-collection race (see importRetryingGcRace). */
export function isGcRace(err: unknown): boolean {
  return /parent snapshot \S+ does not exist/.test((err as Error)?.message ?? '');
}

const crictl = (l: LabLayout, ...args: string[]) =>
  runCommand(
    [
      path.join(l.bin, 'crictl'),
      `--runtime-endpoint=unix://${l.paths.containerdSocket}`,
      `--image-endpoint=unix://${l.paths.containerdSocket}`,
      '--timeout=30s',
      ...args,
    ],
    { check: false, timeoutMs: 90_000 },
  );

/**
 * Stops and removes every pod sandbox through the CRI, as the kubelet would: containers get their stop
 * signal, CNI releases each pod's address, veth and network namespace. Returns how many pods it removed.
 */
export async function removeAllPods(l: LabLayout): Promise<number> {
  const list = await crictl(l, 'pods', '-q');
  const ids = list.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
  if (ids.length === 0) return 0;
  await crictl(l, 'stopp', ...ids);
  await crictl(l, 'rmp', '--force', ...ids);
  return ids.length;
}

/** Processes in the node's cgroup root (containers a crash left running), from every hierarchy. */
function cgroupPids(): number[] {
  const pids = new Set<number>();
  const walk = (dir: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    try {
      for (const line of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) {
        if (/^\d+$/.test(line)) pids.add(Number(line));
      }
    } catch {
      // Not a cgroup directory.
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  for (const h of cgroupHierarchies()) walk(path.join(h, CGROUP_ROOT));
  return [...pids];
}

/** containerd's shims for this lab: started by our containerd, found by the socket address they were given. */
function shimPids(p: LabPaths): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string[];
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!path.basename(cmdline[0] ?? '').startsWith('containerd-shim')) continue;
    const i = cmdline.indexOf('-address');
    if (i >= 0 && cmdline[i + 1] === p.containerdSocket) out.push(Number(entry));
  }
  return out;
}

/** Stops what a crashed node left: container processes in the lab's cgroups, then the shims. Returns how many. */
export async function stopNodeLeftovers(p: LabPaths): Promise<number> {
  let stopped = 0;
  for (const pids of [cgroupPids(), shimPids(p)]) {
    const live = pids
      .filter((pid) => pid !== process.pid)
      .map((pid) => ({ pid, startTime: processStartTime(pid) }))
      .filter((t): t is { pid: number; startTime: string } => t.startTime !== null);
    await Promise.all(live.map((t) => stopProcess(t, 5_000)));
    stopped += live.length;
  }
  return stopped;
}

/**
 * Removes the node's traces outside the state directory: the kubelet's cgroup root (deepest first; a
 * cgroup with processes cannot go, so this runs after stopNodeLeftovers), its log links in
 * /var/log/containers that point into the lab, and CNI's cached results for the lab's network.
 */
export function removeNodeHostState(p: LabPaths): string[] {
  const problems: string[] = [];
  for (const h of cgroupHierarchies()) {
    const root = path.join(h, CGROUP_ROOT);
    if (!fs.existsSync(root)) continue;
    const dirs: string[] = [];
    const walk = (dir: string) => {
      dirs.push(dir);
      for (const e of fs.readdirSync(dir, { withFileTypes: true }))
        if (e.isDirectory()) walk(path.join(dir, e.name));
    };
    walk(root);
    for (const dir of dirs.sort((a, b) => b.length - a.length)) {
      try {
        fs.rmdirSync(dir);
      } catch (err) {
        problems.push(`cgroup ${dir}: ${(err as Error).message}`);
      }
    }
  }
  try {
    for (const name of fs.readdirSync(KUBELET_CONTAINER_LOG_LINKS)) {
      const link = path.join(KUBELET_CONTAINER_LOG_LINKS, name);
      try {
        if (fs.readlinkSync(link).startsWith(`${p.podLogs}/`)) fs.rmSync(link);
      } catch {
        // Not a link, or gone.
      }
    }
  } catch {
    // No such directory: the kubelet never ran here.
  }
  try {
    for (const name of fs.readdirSync(CNI_RESULT_CACHE)) {
      if (name.startsWith(`${CNI_NETWORK}-`)) fs.rmSync(path.join(CNI_RESULT_CACHE, name), { force: true });
    }
  } catch {
    // No cache.
  }
  let created: string[] = [];
  try {
    created = JSON.parse(fs.readFileSync(hostDirsFile(p), 'utf8')) as string[];
  } catch {
    // Not recorded: leave the host's directories alone.
  }
  for (const dir of HOST_DIRS.filter((d) => created.includes(d))) {
    try {
      fs.rmdirSync(dir); // only when empty
    } catch {
      // Gone, or something else put files there since: not ours to remove.
    }
  }
  fs.rmSync(hostDirsFile(p), { force: true });
  return problems;
}

/** Mount points under a directory, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(
  root: string,
  mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8'),
): string[] {
  const prefix = `${root}/`;
  return mountinfo
    .split('\n')
    .map((line) => (line.split(' ')[4] ?? '').replace(/\\040/g, ' '))
    .filter((p) => p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

/** The node's configuration files, for `tp-lab status` and the docs. */
export function nodeConfigFiles(p: LabPaths): string[] {
  return [containerdConfigFile(p), kubeletConfigFile(p), cniConflistFile(p)];
}
