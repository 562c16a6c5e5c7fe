// Pointing the workstation's resolver at tp's DNS server, and putting it back exactly.
//
// systemd-resolved (when it runs and serves this network namespace): the VIF becomes a link with tp's
// server and routing domains (~cluster.local, ~svc, ~NAMESPACE) plus the connected namespace's search
// domain; resolved keeps every other name where it was. Nothing to restore but the link, which goes away
// with the VIF.
//
// Otherwise a managed resolv.conf: the original bytes (or the symlink it was) are saved in the state
// directory first, then the file is rewritten in place (a bind-mounted /etc/resolv.conf, as in
// `ip netns exec`, cannot be replaced by rename). Quit restores it byte for byte; after a crash the next
// start restores it before anything else. If something else rewrote the file meanwhile (DHCP, NetworkManager)
// its version is left alone.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from '../logging/logger.js';
import type { Upstream } from './forwarder.js';
import { isManagedResolvConf, parseResolvConf, renderManagedResolvConf } from './resolv-conf.js';

export const DEFAULT_RESOLV_CONF = '/etc/resolv.conf';
const BACKUP_FILE = 'resolv.conf.backup.json';
const RESOLVED_STUB = { address: '127.0.0.53', port: 53 };

export type DnsMode = 'auto' | 'systemd-resolved' | 'resolv.conf';

export interface ResolverTarget {
  vifName: string;
  /** tp's DNS server address. */
  dnsAddress: string;
  /** Routing domains for systemd-resolved: the cluster domain, "svc", the namespaces. */
  routingDomains: string[];
  /** Search domain for single-label names: NAMESPACE.svc.CLUSTER_DOMAIN. */
  searchDomain: string;
}

export interface SystemResolverOptions {
  mode: DnsMode;
  resolvConfPath: string;
  stateDir: string;
  log: Logger;
  resolvectl?: (args: string[]) => Promise<string>;
}

export interface SystemResolverConfig {
  readonly mode: 'systemd-resolved' | 'resolv.conf';
  /** For `tp status`. */
  readonly description: string;
  /** Where names that are not the cluster's are forwarded. */
  readonly upstream: Upstream[];
  /** The namespaces changed: update the routing domains. */
  update(target: ResolverTarget): Promise<void>;
  restore(): Promise<void>;
}

interface ResolvConfBackup {
  path: string;
  /** What the file was: a regular file (content in base64), a symlink, or absent. */
  kind: 'file' | 'symlink' | 'absent';
  content?: string;
  mode?: number;
  target?: string;
  /** What tp wrote: restored only while the file still holds exactly this. */
  managed: string;
}

export function runResolvectl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('resolvectl', args, { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error)
        reject(new Error(`resolvectl ${args.join(' ')} failed: ${(stderr || error.message).trim()}`));
      else resolve(stdout);
    });
  });
}

/**
 * systemd-resolved serves this process when it runs and this process is in the host's network namespace
 * (a link of another namespace is invisible to it).
 */
export function systemdResolvedServesUs(): boolean {
  try {
    if (!fs.existsSync('/run/systemd/resolve/io.systemd.Resolve')) return false;
    return fs.statSync('/proc/self/ns/net').ino === fs.statSync('/proc/1/ns/net').ino;
  } catch {
    return false;
  }
}

/** The mount points of a /proc/PID/mountinfo (field 5; spaces and the like are octal escapes). */
export function parseMountPoints(mountinfo: string): Set<string> {
  const points = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4];
    if (field)
      points.add(
        field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))),
      );
  }
  return points;
}

function symlinkToMountPoint(file: string): boolean {
  try {
    return parseMountPoints(fs.readFileSync('/proc/self/mountinfo', 'utf8')).has(fs.realpathSync(file));
  } catch {
    return false; // a dangling link, or no /proc: handled as a symlink
  }
}

function backupPath(stateDir: string): string {
  return path.join(stateDir, BACKUP_FILE);
}

/** Restores the resolv.conf a previous daemon left managed (it crashed); true when it restored something. */
export function restoreLeftoverResolvConf(stateDir: string, log: Logger): boolean {
  const file = backupPath(stateDir);
  let backup: ResolvConfBackup;
  try {
    backup = JSON.parse(fs.readFileSync(file, 'utf8')) as ResolvConfBackup;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    log.warn('unreadable resolv.conf backup: removing it', { file, error: (e as Error).message });
    fs.rmSync(file, { force: true });
    return false;
  }
  const restored = restoreFromBackup(backup, log);
  fs.rmSync(file, { force: true });
  if (restored)
    log.info('restored the resolv.conf a previous root daemon left behind', { path: backup.path });
  return restored;
}

function restoreFromBackup(b: ResolvConfBackup, log: Logger): boolean {
  let current: string | undefined;
  try {
    current = fs.readFileSync(b.path, 'utf8');
  } catch {
    current = undefined;
  }
  if (current !== b.managed) {
    // Someone else wrote the file after tp did: theirs is newer than our backup.
    if (current === undefined || !isManagedResolvConf(current)) {
      log.warn('resolv.conf was changed by something else while tp was connected: leaving it as it is', {
        path: b.path,
      });
      return false;
    }
  }
  if (b.kind === 'symlink') {
    fs.rmSync(b.path, { force: true });
    fs.symlinkSync(b.target!, b.path);
  } else if (b.kind === 'absent') {
    fs.rmSync(b.path, { force: true });
  } else {
    // In place: keeps the inode (and a bind mount on it) as it was.
    fs.writeFileSync(b.path, Buffer.from(b.content!, 'base64'));
    if (b.mode !== undefined) fs.chmodSync(b.path, b.mode);
  }
  return true;
}

function writeAtomically(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Configures the system resolver for tp; restore() puts it back. On failure nothing is changed. */
export async function configureSystemResolver(
  o: SystemResolverOptions,
  target: ResolverTarget,
): Promise<SystemResolverConfig> {
  const useResolved = o.mode === 'systemd-resolved' || (o.mode === 'auto' && systemdResolvedServesUs());
  if (useResolved) return configureResolved(o, target);
  return configureResolvConf(o, target);
}

async function configureResolved(
  o: SystemResolverOptions,
  target: ResolverTarget,
): Promise<SystemResolverConfig> {
  const resolvectl = o.resolvectl ?? runResolvectl;
  const apply = async (t: ResolverTarget) => {
    await resolvectl(['dns', t.vifName, t.dnsAddress]);
    await resolvectl(['domain', t.vifName, t.searchDomain, ...t.routingDomains.map((d) => `~${d}`)]);
    // Only the routing domains go to tp: the link must not become a default route for every name.
    await resolvectl(['default-route', t.vifName, 'false']);
  };
  try {
    await apply(target);
  } catch (e) {
    await resolvectl(['revert', target.vifName]).catch(() => {});
    throw e;
  }
  let current = target;
  return {
    mode: 'systemd-resolved',
    get description() {
      return `systemd-resolved: ${current.dnsAddress} on ${current.vifName} for ${current.routingDomains.join(', ')}`;
    },
    upstream: [RESOLVED_STUB],
    update: async (t) => {
      current = t;
      await apply(t);
    },
    restore: async () => {
      await resolvectl(['revert', current.vifName]).catch((e: Error) =>
        o.log.debug('resolvectl revert failed (the link is gone with the VIF)', { error: e.message }),
      );
    },
  };
}

function configureResolvConf(o: SystemResolverOptions, target: ResolverTarget): SystemResolverConfig {
  const file = o.resolvConfPath;
  let kind: ResolvConfBackup['kind'] = 'file';
  let original = Buffer.alloc(0);
  let mode: number | undefined;
  let linkTarget: string | undefined;
  try {
    const st = fs.lstatSync(file);
    // A symlink is replaced by a file (its target may belong to something else, e.g. systemd's stub),
    // unless its target is a mount point: then the file there was put in place for this process on
    // purpose (`ip netns exec`, `tp-lab exec` bind-mount one over the symlink's target) and the symlink
    // itself is shared with the host, so the file is written in place, through the symlink.
    if (st.isSymbolicLink() && !symlinkToMountPoint(file)) {
      kind = 'symlink';
      linkTarget = fs.readlinkSync(file);
    }
    original = fs.readFileSync(file);
    mode = fs.statSync(file).mode & 0o7777;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new Error(`cannot read ${file}: ${(e as Error).message}`);
    kind = kind === 'symlink' ? 'symlink' : 'absent';
  }
  const originalText = original.toString('utf8');
  if (isManagedResolvConf(originalText))
    throw new Error(
      `${file} is still managed by tp but no backup of the original exists in ${o.stateDir}: restore it by hand, then connect again`,
    );
  const upstream = parseResolvConf(originalText).nameservers.map((address) => ({ address, port: 53 }));
  // glibc with no nameserver line asks the local host.
  if (upstream.length === 0) upstream.push({ address: '127.0.0.1', port: 53 });
  const managed = renderManagedResolvConf(originalText, target.dnsAddress, target.vifName);
  const backup: ResolvConfBackup = {
    path: file,
    kind,
    content: kind === 'absent' ? undefined : original.toString('base64'),
    mode,
    target: linkTarget,
    managed,
  };
  // The backup is on disk before the file changes: a crash between the two leaves a restorable state.
  writeAtomically(backupPath(o.stateDir), JSON.stringify(backup));
  try {
    if (kind === 'symlink') fs.rmSync(file, { force: true });
    fs.writeFileSync(file, managed, { mode: mode ?? 0o644 });
  } catch (e) {
    restoreFromBackup(backup, o.log);
    fs.rmSync(backupPath(o.stateDir), { force: true });
    throw new Error(`cannot write ${file}: ${(e as Error).message}`);
  }
  o.log.info('resolv.conf now points at tp', { path: file, nameserver: target.dnsAddress });
  return {
    mode: 'resolv.conf',
    description: `${file}: nameserver ${target.dnsAddress} (forwarding to ${upstream.map((u) => u.address).join(', ')})`,
    upstream,
    update: async () => {
      // resolv.conf names no domains: cluster names are recognized by tp's resolver itself.
    },
    restore: async () => {
      const restored = restoreFromBackup(backup, o.log);
      fs.rmSync(backupPath(o.stateDir), { force: true });
      if (restored) o.log.info('resolv.conf restored', { path: file });
    },
  };
}
