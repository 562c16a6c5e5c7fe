// What a root daemon that died without cleaning up (kill -9, a crash, a power cut) leaves behind, and
// clearing it before a new one starts: the resolv.conf it managed, tp's routing rule and table, a TUN
// that outlived it. The daemon records itself in the state directory so the next one can tell.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { restoreLeftoverResolvConf } from '../../dns/system-resolver.js';
import type { Logger } from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import { CommandError, type IpCommands } from '../../vif/ip-command.js';
import { removeTpRouting } from '../../vif/routes.js';

const RECORD_FILE = 'root-daemon.json';

export interface DaemonRecord {
  pid: number;
  socket: string;
  /** The VIF it created, while connected. */
  vifName?: string;
}

function recordPath(stateDir: string): string {
  return path.join(stateDir, RECORD_FILE);
}

export function readRecord(stateDir: string): DaemonRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(recordPath(stateDir), 'utf8')) as DaemonRecord;
  } catch {
    return undefined;
  }
}

export function writeRecord(stateDir: string, record: DaemonRecord): void {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(recordPath(stateDir), JSON.stringify(record), { mode: 0o600 });
}

export function removeRecord(stateDir: string): void {
  fs.rmSync(recordPath(stateDir), { force: true });
}

/** True when pid is a live tp root daemon (not just any process that reused the pid). */
export function isLiveRootDaemon(pid: number): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('daemons/root/main.js');
  } catch {
    return false;
  }
}

/**
 * Clears what a dead root daemon left behind; refuses when one is still alive. Returns what it cleared,
 * for the log.
 */
export async function clearLeftovers(o: {
  stateDir: string;
  vifName: string;
  run: IpCommands;
  log: Logger;
}): Promise<string[]> {
  const cleared: string[] = [];
  const previous = readRecord(o.stateDir);
  if (previous && previous.pid !== process.pid && isLiveRootDaemon(previous.pid))
    throw new UsageError(
      `another tp root daemon is running (pid ${previous.pid}, socket ${previous.socket}): stop it with tp quit (or kill ${previous.pid}) first`,
    );
  if (restoreLeftoverResolvConf(o.stateDir, o.log)) cleared.push('resolv.conf restored');
  if (await removeTpRouting(o.run)) cleared.push("tp's routing rule and table removed");
  // A TUN of a dead daemon: it survives only if something else still holds it open; ours by name only.
  const names = new Set([o.vifName, ...(previous?.vifName ? [previous.vifName] : [])]);
  for (const name of names) {
    try {
      const info = JSON.parse(await o.run.ip(['-j', '-d', 'link', 'show', 'dev', name])) as Array<{
        linkinfo?: { info_kind?: string };
      }>;
      if (info[0]?.linkinfo?.info_kind === 'tun' && previous?.vifName === name) {
        await o.run.ip(['link', 'del', 'dev', name]);
        cleared.push(`stale interface ${name} removed`);
      }
    } catch (e) {
      if (!(e instanceof CommandError)) throw e; // no such device: nothing to clear
    }
  }
  if (previous) removeRecord(o.stateDir);
  return cleared;
}
