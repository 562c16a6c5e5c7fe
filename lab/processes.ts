// Detached lab processes, tracked by PID files. A PID file holds the PID and the process's start
// time (field 22 of /proc/PID/stat), so a recycled PID is never mistaken for a lab process.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { missingTool } from './command.js';

export interface TrackedProcess {
  pid: number;
  startTime: string;
}

/** The start time (in clock ticks since boot) of a live process, or null when it does not exist. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if (fields[0] === 'Z') return null;
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

export function readPidFile(file: string): TrackedProcess | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const [pid, startTime] = text.trim().split(/\s+/);
  if (!pid || !/^\d+$/.test(pid) || !startTime) return null;
  return { pid: Number(pid), startTime };
}

/** The tracked process, if the PID file names one that is still alive. */
export function liveProcess(file: string): TrackedProcess | null {
  const tracked = readPidFile(file);
  if (!tracked) return null;
  return processStartTime(tracked.pid) === tracked.startTime ? tracked : null;
}

/**
 * Starts argv detached (its own process group, surviving this process), stdout and stderr appended
 * to logFile, and records it in pidFile. Resolves once the process has been created.
 */
export function startDetached(argv: string[], logFile: string, pidFile: string): Promise<TrackedProcess> {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  fs.mkdirSync(path.dirname(pidFile), { recursive: true });
  const out = fs.openSync(logFile, 'a');
  fs.writeSync(out, `\n==== ${new Date().toISOString()} tp-lab started: ${argv.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT' ? missingTool(argv[0]!) : err);
    });
    child.once('spawn', () => {
      const pid = child.pid!;
      const startTime = processStartTime(pid);
      child.unref();
      if (startTime === null) {
        reject(new Error(`${path.basename(argv[0]!)} exited right after starting; see ${logFile}`));
        return;
      }
      fs.writeFileSync(pidFile, `${pid} ${startTime}\n`);
      resolve({ pid, startTime });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the process is gone; true if it went within timeoutMs. */
export async function waitForExit(p: TrackedProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (processStartTime(p.pid) === p.startTime) {
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
  return true;
}

/** SIGTERM, then SIGKILL after the grace period. Returns how it ended. */
export async function stopProcess(
  p: TrackedProcess,
  graceMs: number,
): Promise<'gone' | 'terminated' | 'killed'> {
  if (processStartTime(p.pid) !== p.startTime) return 'gone';
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return 'gone';
  }
  if (await waitForExit(p, graceMs)) return 'terminated';
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    return 'terminated';
  }
  await waitForExit(p, 5_000);
  return 'killed';
}

/** Stops the process a PID file names (if alive) and removes the file. */
export async function stopByPidFile(
  file: string,
  graceMs: number,
): Promise<'gone' | 'terminated' | 'killed'> {
  const tracked = liveProcess(file);
  const how = tracked ? await stopProcess(tracked, graceMs) : 'gone';
  fs.rmSync(file, { force: true });
  return how;
}
