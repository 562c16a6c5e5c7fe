// The eBPF capture mechanism as tp-init drives it: apply (idempotent), status (with counters), cleanup
// (nothing left), probeSupport. One pin directory per pod network namespace:
//   <pinRoot>/<netns-inode>/{link, prog, tp_ports, tp_listeners, tp_stats}
// The link is pinned last, so a directory with a link is complete; the pins keep the program attached after
// tp-init exits, and the agent finds tp_listeners there.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLogger } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import { type EbpfCaptureConfig, planPortChanges, validateCaptureConfig } from './capture-config.js';
import { BPF_ANY, BpfError } from './libbpf.js';
import { defaultObjectPath, LoadedProgram } from './loader.js';
import {
  BpfMap,
  closeFd,
  type LinkInfo,
  linkInfo,
  openPinned,
  type ProgramInfo,
  programInfo,
} from './objects.js';
import {
  ALL_PINS,
  CAPTURED_VALUE,
  DEFAULT_PIN_ROOT,
  decodePortKey,
  decodeStats,
  encodePortKey,
  LINK_PIN,
  LISTENERS_MAP,
  MAP_LAYOUT,
  PORTS_MAP,
  type PortStats,
  PROGRAM_PIN,
  pinDirFor,
  STATS_MAP,
  STATS_SIZE,
} from './steering-keys.js';
import { probeSupport, type SupportReport } from './support.js';

export type { EbpfCaptureConfig };
export { probeSupport, type SupportReport };

const log = createLogger('bpf');

export interface NamespaceSelector {
  /** The network namespace; the caller's own by default. */
  netnsPath?: string;
  /** The bpffs directory of tp's pins; /sys/fs/bpf/tp by default. */
  pinRoot?: string;
}

export interface ApplyResult {
  pinDir: string;
  netnsInode: number;
  /** False when everything was already in place (a second apply). */
  changed: boolean;
  /** What was done, one line each, for the log. */
  actions: string[];
}

export interface PortStatus {
  port: number;
  /** True while the agent has a listener registered for this port (an intercept is active). */
  steering: boolean;
  stats: PortStats;
}

export interface CaptureStatus {
  pinDir: string;
  netnsInode: number;
  /** Program attached to this network namespace through the pinned link. */
  attached: boolean;
  link?: LinkInfo;
  program?: ProgramInfo;
  /** Which pins exist. */
  pins: Record<(typeof ALL_PINS)[number], boolean>;
  ports: PortStatus[];
  /** Anything wrong, one line each with the fix. */
  problems: string[];
}

export interface CleanupResult {
  pinDir: string;
  /** The pins removed; empty when there was nothing to remove. */
  removed: string[];
}

/** The inode of a network namespace file (/proc/<pid>/ns/net, /run/netns/NAME). */
export function netnsInode(netnsPath: string): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(netnsPath);
  } catch (err) {
    throw new UsageError(
      `network namespace ${netnsPath} cannot be opened (${(err as NodeJS.ErrnoException).code}): pass an existing one, e.g. /proc/self/ns/net or /run/netns/NAME`,
    );
  }
  return st.ino;
}

function openMaps(dir: string): { ports: BpfMap; listeners: BpfMap; stats: BpfMap; close(): void } {
  const open = (name: keyof typeof MAP_LAYOUT) => {
    const { keySize, valueSize } = MAP_LAYOUT[name];
    const map = BpfMap.openPinned(path.join(dir, name), name, keySize, valueSize);
    if (!map) throw new BpfError(`map ${name} is not pinned in ${dir}`, 2);
    return map;
  };
  const opened: BpfMap[] = [];
  const closeAll = () => {
    for (const m of opened) m.close();
  };
  try {
    const ports = open(PORTS_MAP);
    opened.push(ports);
    const listeners = open(LISTENERS_MAP);
    opened.push(listeners);
    const stats = open(STATS_MAP);
    opened.push(stats);
    return { ports, listeners, stats, close: closeAll };
  } catch (err) {
    closeAll();
    throw err;
  }
}

function withPinnedInfo<T>(file: string, read: (fd: number) => T): T | undefined {
  const fd = openPinned(file);
  if (fd === undefined) return undefined;
  try {
    return read(fd);
  } finally {
    closeFd(fd);
  }
}

function pinsIn(dir: string): CaptureStatus['pins'] {
  const pins = {} as CaptureStatus['pins'];
  for (const name of ALL_PINS) pins[name] = fs.existsSync(path.join(dir, name));
  return pins;
}

/** Removes tp's pins in dir, then dir; unpinning the link detaches the program. */
function removePins(dir: string): string[] {
  const removed: string[] = [];
  // The link first: from then on nothing is steered, whatever else fails.
  for (const name of ALL_PINS) {
    const file = path.join(dir, name);
    try {
      fs.unlinkSync(file);
      removed.push(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  try {
    fs.rmdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY') {
      throw new UsageError(
        `${dir} holds files tp did not pin (${fs.readdirSync(dir).join(', ')}): remove them by hand`,
      );
    }
    if (code !== 'ENOENT') throw err;
  }
  return removed;
}

/**
 * Removes the pin directories of network namespaces that no longer exist (their link is defunct: netns
 * inode 0). A pod's pins outlive it when bpffs is the host's; the next apply on the node collects them.
 */
export function sweepStale(pinRoot = DEFAULT_PIN_ROOT, keep?: string): string[] {
  const swept: string[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync(pinRoot);
  } catch {
    return swept;
  }
  for (const entry of entries) {
    const dir = path.join(pinRoot, entry);
    if (!/^\d+$/.test(entry) || dir === keep) continue;
    // A directory without a link may be another pod's apply in progress: leave it.
    try {
      const link = withPinnedInfo(path.join(dir, LINK_PIN), linkInfo);
      if (link && link.netnsInode === 0) {
        removePins(dir);
        swept.push(dir);
      }
    } catch (err) {
      // Someone else's leftovers must not fail this pod's apply.
      log.warn('cannot remove the pins of a deleted namespace', { dir, reason: (err as Error).message });
    }
  }
  return swept;
}

function reconcilePorts(dir: string, wanted: number[]): string[] {
  const actions: string[] = [];
  const maps = openMaps(dir);
  try {
    const current = maps.ports.keys().map(decodePortKey);
    const { add, remove } = planPortChanges(current, wanted);
    for (const port of add) {
      const key = encodePortKey(port);
      maps.stats.update(key, Buffer.alloc(STATS_SIZE), BPF_ANY);
      maps.ports.update(key, CAPTURED_VALUE);
      actions.push(`captured port ${port}`);
    }
    for (const port of remove) {
      const key = encodePortKey(port);
      // Stop capturing first, then drop the listener and the counters.
      maps.ports.delete(key);
      maps.listeners.delete(key);
      maps.stats.delete(key);
      actions.push(`released port ${port}`);
    }
  } finally {
    maps.close();
  }
  return actions;
}

/**
 * Lets a non-root agent open the two maps it uses: the directories become traversable (not listable) and
 * tp_ports and tp_listeners become the agent's. The link, the program and the counters stay root's.
 */
function grantAgentAccess(pinRoot: string, dir: string, uid: number | undefined): string[] {
  if (uid === undefined) return [];
  const actions: string[] = [];
  for (const d of [pinRoot, dir]) {
    const mode = fs.statSync(d).mode & 0o777;
    if ((mode & 0o111) !== 0o111) {
      fs.chmodSync(d, mode | 0o111);
      actions.push(`made ${d} traversable for the agent`);
    }
  }
  for (const name of [PORTS_MAP, LISTENERS_MAP]) {
    const file = path.join(dir, name);
    const st = fs.statSync(file);
    if (st.uid !== uid) {
      fs.chownSync(file, uid, st.gid);
      actions.push(`gave ${file} to the agent's UID ${uid}`);
    }
  }
  return actions;
}

function install(program: LoadedProgram, config: EbpfCaptureConfig, dir: string): LinkInfo {
  fs.mkdirSync(dir, { mode: 0o700 });
  let netnsFd: number | undefined;
  try {
    program.pinObjects(dir);
    reconcilePorts(dir, config.ports);
    grantAgentAccess(config.pinRoot, dir, config.agentUid);
    netnsFd = fs.openSync(config.netnsPath, 'r');
    return program.attachAndPin(netnsFd, dir);
  } catch (err) {
    // Nothing half-done: take back every pin (and with the link, the attachment).
    try {
      removePins(dir);
    } catch {
      // Report the original failure; status shows what is left.
    }
    throw err;
  } finally {
    if (netnsFd !== undefined) fs.closeSync(netnsFd);
  }
}

/**
 * Attaches tp_steer to the network namespace and captures config.ports. Idempotent: when the same program
 * is attached already, only the captured ports are brought in line (a second apply changes nothing); a
 * different program (an upgrade) or an incomplete directory (a crash) is replaced.
 */
export function apply(input: Parameters<typeof validateCaptureConfig>[0]): ApplyResult {
  const config = validateCaptureConfig(input);
  const support = probeSupport({
    pinRoot: config.pinRoot,
    ...(config.agentUid !== undefined ? { agentUid: config.agentUid } : {}),
    ...(config.objectPath ? { objectPath: config.objectPath } : {}),
  });
  if (!support.supported) throw new UsageError(`eBPF capture is not available: ${support.reason}`);
  const inode = netnsInode(config.netnsPath);
  const dir = pinDirFor(inode, config.pinRoot);
  fs.mkdirSync(config.pinRoot, { recursive: true, mode: 0o700 });
  const actions = sweepStale(config.pinRoot, dir).map((d) => `removed the pins of a deleted namespace: ${d}`);

  const program = LoadedProgram.load(config.objectPath ?? defaultObjectPath());
  try {
    const current = status({ netnsPath: config.netnsPath, pinRoot: config.pinRoot });
    const intact = current.attached && current.problems.length === 0;
    if (intact && current.program?.tag === program.info.tag) {
      actions.push(...reconcilePorts(dir, config.ports));
      actions.push(...grantAgentAccess(config.pinRoot, dir, config.agentUid));
      return { pinDir: dir, netnsInode: inode, changed: actions.length > 0, actions };
    }
    if (fs.existsSync(dir)) {
      const why = intact ? 'a different program version' : 'an incomplete or detached set';
      const removed = removePins(dir);
      actions.push(`replaced ${removed.length} pins in ${dir} (${why})`);
    }
    const link = install(program, config, dir);
    actions.push(
      `attached ${program.info.name} (tag ${program.info.tag}) to network namespace ${inode} as link ${link.id}`,
      `captured ports ${config.ports.join(',')}`,
    );
    if (config.agentUid !== undefined)
      actions.push(`gave tp_ports and tp_listeners to UID ${config.agentUid}`);
    return { pinDir: dir, netnsInode: inode, changed: true, actions };
  } finally {
    // The pins hold what must stay; everything else of the loaded object goes.
    program.close();
  }
}

function readPorts(dir: string): PortStatus[] {
  const ports: PortStatus[] = [];
  const maps = openMaps(dir);
  try {
    for (const key of maps.ports.keys()) {
      const value = maps.stats.lookup(key);
      ports.push({
        port: decodePortKey(key),
        steering: maps.listeners.lookup(key) !== undefined,
        stats: decodeStats(value ?? Buffer.alloc(STATS_SIZE)),
      });
    }
  } finally {
    maps.close();
  }
  return ports.sort((a, b) => a.port - b.port);
}

/** What is pinned and attached for the network namespace, with per-port counters. */
export function status(selector: NamespaceSelector = {}): CaptureStatus {
  const netnsPath = selector.netnsPath ?? '/proc/self/ns/net';
  const inode = netnsInode(netnsPath);
  const dir = pinDirFor(inode, selector.pinRoot ?? DEFAULT_PIN_ROOT);
  const pins = pinsIn(dir);
  const problems: string[] = [];
  const link = pins.link ? withPinnedInfo(path.join(dir, LINK_PIN), linkInfo) : undefined;
  const program = pins.prog ? withPinnedInfo(path.join(dir, PROGRAM_PIN), programInfo) : undefined;
  let attached = false;
  if (link) {
    if (link.netnsInode === 0) problems.push('the link is detached: its network namespace is gone');
    else if (link.netnsInode !== inode) {
      problems.push(`the link is attached to network namespace ${link.netnsInode}, not ${inode}`);
    } else if (program && link.progId !== program.id) {
      problems.push(`the link runs program ${link.progId}, not the pinned program ${program.id}`);
    } else attached = true;
  }
  const missing = ALL_PINS.filter((name) => !pins[name]);
  if (missing.length > 0 && missing.length < ALL_PINS.length) {
    problems.push(`incomplete pins in ${dir} (missing ${missing.join(', ')}): run apply again or cleanup`);
  }
  const ports: PortStatus[] = [];
  if (pins.tp_ports && pins.tp_listeners && pins.tp_stats) {
    try {
      ports.push(...readPorts(dir));
    } catch (err) {
      // A map of another version (other layout): report it, apply replaces it.
      problems.push((err as Error).message);
    }
  }
  return {
    pinDir: dir,
    netnsInode: inode,
    attached,
    ...(link ? { link } : {}),
    ...(program ? { program } : {}),
    pins,
    ports,
    problems,
  };
}

/** Detaches the program and removes every pin of the network namespace; nothing there is fine. */
export function cleanup(selector: NamespaceSelector = {}): CleanupResult {
  const inode = netnsInode(selector.netnsPath ?? '/proc/self/ns/net');
  const dir = pinDirFor(inode, selector.pinRoot ?? DEFAULT_PIN_ROOT);
  return { pinDir: dir, removed: removePins(dir) };
}

/** The status as JSON, with the 64-bit counters as numbers. */
export function statusJson(s: CaptureStatus): string {
  return `${JSON.stringify(s, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2)}\n`;
}

/** The status as an admin reads it in `tp-init status --mechanism ebpf`. */
export function formatStatus(s: CaptureStatus): string {
  const lines: string[] = [];
  if (!Object.values(s.pins).some(Boolean)) {
    lines.push(
      `eBPF capture: not applied in network namespace ${s.netnsInode} (nothing pinned at ${s.pinDir})`,
    );
    return lines.join('\n');
  }
  lines.push(
    `eBPF capture: ${s.attached ? 'attached' : 'NOT attached'} to network namespace ${s.netnsInode}`,
    `  pins:    ${s.pinDir} (${ALL_PINS.map((n) => `${n}${s.pins[n] ? '' : ' MISSING'}`).join(', ')})`,
  );
  if (s.program) lines.push(`  program: ${s.program.name} id ${s.program.id} tag ${s.program.tag}`);
  if (s.link) lines.push(`  link:    id ${s.link.id} (bpftool link show id ${s.link.id})`);
  lines.push('  port   steering  steered  no-listener  local  assign-failed');
  for (const p of s.ports) {
    const c = p.stats;
    lines.push(
      `  ${String(p.port).padEnd(6)} ${(p.steering ? 'on' : 'off').padEnd(9)} ${String(c.steered).padStart(7)}  ${String(c.noListener).padStart(11)}  ${String(c.local).padStart(5)}  ${String(c.assignFailed).padStart(13)}`,
    );
  }
  for (const problem of s.problems) lines.push(`  problem: ${problem}`);
  return lines.join('\n');
}
