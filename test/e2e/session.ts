// The lab's lifetime around a test run. `node test/run.mjs` brings the lab up once before the e2e
// files and takes it down after them (also when they fail), and tells each file the outcome through
// TP_E2E_LAB. A file run on its own brings the lab up itself and leaves it running.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { labDir } from '../../lab/paths.js';
import { labStatus, renderStatus } from '../../lab/status.js';
import { describeCluster, externalKubeconfig, labUnavailableReason, tpLabMain } from './cluster.js';
import { kubectl } from './kube.js';

/** up | external | skip:<why the lab cannot run here> | failed:<why `tp-lab up` failed>. */
export const LAB_STATE_ENV = 'TP_E2E_LAB';
/** Set when the lab was already running before the test run: the run must leave it running. */
export const KEEP_LAB_ENV = 'TP_E2E_KEEP_LAB';

export interface E2eRun {
  state: string;
  ownsLab: boolean;
  /** Ends this run's hold on the lab (see acquireLabLock). */
  release?: () => void;
}

/**
 * The lab is one per machine (its namespaces, ports and cgroups have fixed names): test runs that use it
 * take turns. An exclusive flock(1) on `<lab dir>.lock`, held by a child process that exits when its
 * stdin closes, so the lock goes with this process however it ends. Says so while it waits.
 */
export async function acquireLabLock(): Promise<() => void> {
  const file = `${labDir()}.lock`;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const child = spawn('flock', ['-x', file, '-c', 'echo locked; read _'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const waiting = setTimeout(
    () => process.stderr.write(`# e2e: another test run is using the lab; waiting for ${file}\n`),
    2_000,
  );
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`flock ${file} exited (${code}) before locking`)));
    child.stdout!.setEncoding('utf8').once('data', () => resolve());
  }).finally(() => clearTimeout(waiting));
  child.removeAllListeners('exit');
  child.unref();
  (child.stdout as unknown as { unref?: () => void }).unref?.();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  return () => child.stdin!.end();
}

/** Runs tp-lab with its progress on stderr; resolves to the exit code and the last stderr line. */
export function runTpLab(args: string[]): Promise<{ code: number; lastLine: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tpLabMain, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let lastLine = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      process.stderr.write(d);
      const lines = d.trimEnd().split('\n');
      lastLine = lines[lines.length - 1] ?? lastLine;
    });
    child.on('close', (code) => resolve({ code: code ?? 1, lastLine: lastLine.replace(/^tp-lab: /, '') }));
  });
}

async function labRunning(): Promise<boolean> {
  try {
    return (await labStatus()).state === 'running';
  } catch {
    return false;
  }
}

/** Before the e2e files: make the lab available (or record why it is not). */
export async function beginE2eRun(): Promise<E2eRun> {
  if (externalKubeconfig()) return { state: 'external', ownsLab: false };
  // Started by a run that holds the lab (test/run.mjs's e2e phase, e.g. the bench smoke test): the lab
  // is up and the lock is the parent's; locking again would wait for the parent forever.
  if (process.env[LAB_STATE_ENV] === 'up') return { state: 'up', ownsLab: false };
  const reason = labUnavailableReason();
  if (reason) return { state: `skip:${reason}`, ownsLab: false };
  const release = await acquireLabLock();
  if (await labRunning()) {
    // Still `tp-lab up`: on a running lab it imports this checkout's images (tp's, rebuilt) and nothing else.
    const up = await runTpLab(['up']);
    if (up.code !== 0) return { state: `failed:tp-lab up failed: ${up.lastLine}`, ownsLab: false, release };
    return { state: 'up', ownsLab: false, release };
  }
  process.stderr.write('# e2e: bringing the lab up (tp-lab up) once for all e2e files\n');
  const up = await runTpLab(['up']);
  if (up.code !== 0) return { state: `failed:tp-lab up failed: ${up.lastLine}`, ownsLab: true, release };
  return { state: 'up', ownsLab: true, release };
}

/** After the e2e files (also on failure): take down the lab this run brought up. */
export async function endE2eRun(run: E2eRun): Promise<void> {
  try {
    if (!run.ownsLab) return;
    process.stderr.write('# e2e: taking the lab down (tp-lab down)\n');
    await runTpLab(['down']);
  } finally {
    run.release?.();
  }
}

export function e2eEnv(run: E2eRun): Record<string, string> {
  return {
    [LAB_STATE_ENV]: run.state,
    ...(run.ownsLab || run.state !== 'up' ? {} : { [KEEP_LAB_ENV]: '1' }),
  };
}

/**
 * For one test file: the cluster state, bringing the lab up when the file runs on its own.
 * Returns { ok } or why not, and whether that is a skip (cannot run here) or a failure.
 */
export async function clusterState(): Promise<{ ok: true } | { ok: false; skip: boolean; reason: string }> {
  const given = process.env[LAB_STATE_ENV];
  if (given === 'up' || given === 'external') return { ok: true };
  if (given?.startsWith('skip:')) return { ok: false, skip: true, reason: given.slice(5) };
  if (given?.startsWith('failed:')) return { ok: false, skip: false, reason: given.slice(7) };
  const run = await beginE2eRun();
  if (run.state === 'up' || run.state === 'external') return { ok: true };
  if (run.state.startsWith('skip:')) return { ok: false, skip: true, reason: run.state.slice(5) };
  return { ok: false, skip: false, reason: run.state.replace(/^failed:/, '') };
}

/**
 * What the cluster looked like when an e2e file failed, for the log of a CI run that nobody can inspect
 * afterwards: the lab's own status, pods that are not ready, recent warning events and CoreDNS's log.
 */
export async function clusterDiagnostics(run: E2eRun): Promise<string> {
  if (run.state !== 'up' && run.state !== 'external') return '';
  const parts: string[] = [];
  const section = async (title: string, produce: () => Promise<string>) => {
    try {
      parts.push(`## ${title}\n${(await produce()).trimEnd()}`);
    } catch (err) {
      parts.push(`## ${title}\n(unavailable: ${(err as Error).message.split('\n')[0]})`);
    }
  };
  const c = describeCluster();
  const k = async (args: string[]) => {
    const r = await kubectl(c, args, { check: false });
    return r.code === 0 ? r.stdout : `${r.stdout}${r.stderr}`;
  };
  if (c.kind === 'lab') await section('tp-lab status', async () => renderStatus(await labStatus()));
  await section('pods not ready', async () => {
    const lines = (await k(['get', 'pods', '-A', '-o', 'wide', '--no-headers'])).trimEnd().split('\n');
    const notReady = lines.filter((l) => {
      const [, , ready, status] = l.trim().split(/\s+/);
      const [have, want] = (ready ?? '0/1').split('/');
      return status !== 'Completed' && (status !== 'Running' || have !== want);
    });
    return notReady.join('\n') || '(none)';
  });
  await section('warning events (last 25)', async () =>
    (await k(['get', 'events', '-A', '--field-selector', 'type=Warning', '--sort-by', '.lastTimestamp']))
      .trimEnd()
      .split('\n')
      .slice(-25)
      .join('\n'),
  );
  await section('CoreDNS log (last 20 lines)', () =>
    k(['logs', '-n', 'kube-system', 'deploy/coredns', '--tail', '20']),
  );
  return `${parts.join('\n')}\n`;
}
