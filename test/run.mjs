// Runs every compiled test file (dist/**/*.test.js) in its own process, so a test that crashes or
// leaves a handle open cannot take the others down, and prints one closing line:
// "N passed, N failed, N skipped". Usage: node test/run.mjs [substring filter…]
//
// Each file runs in a process group of its own, with testbed/exit-on-signal.ts preloaded. A file that runs
// out of time (TP_TEST_FILE_TIMEOUT_MS, default 10 min), or a run interrupted with Ctrl-C or SIGTERM, gets
// SIGTERM and 20 s to clean up (its rigs' and testbeds' exit handlers remove their network namespaces and
// end their processes and daemons), then its group is killed. Processes a file leaves in its group when it
// ends are named and killed.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(new URL('..', import.meta.url).pathname);
const filters = process.argv.slice(2);
// Where the compiled tests are: dist/, or another tree (test/runner.test.ts runs the runner on fixtures).
const testDist = process.env.TP_TEST_DIST ? path.resolve(process.env.TP_TEST_DIST) : path.join(root, 'dist');
const perFileTimeoutMs = Number(process.env.TP_TEST_FILE_TIMEOUT_MS ?? 10 * 60_000);
/** How long a test file has to clean up after SIGTERM before its process group is killed. */
const cleanupGraceMs = 20_000;
// Every file runs with this preloaded: SIGTERM runs its 'exit' handlers (rigs, testbeds) before it ends.
const exitOnSignal = path.join(root, 'dist', 'testbed', 'exit-on-signal.js');

function find(dir, out = []) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') find(p, out);
    } else if (entry.name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

// Unit tests first, then the ones that use network namespaces, then the lab's e2e scenarios; the
// file that checks `tp-lab down` ends the shared lab, so it runs last.
const isE2e = (f) => f.includes('/e2e/');
const order = (f) => (f.endsWith('/e2e/lab-down.test.js') ? 3 : isE2e(f) ? 2 : f.includes('.netns.') ? 1 : 0);
// Filters match the path below dist/ (e.g. "lab/test", "/e2e/"), never the checkout's own directory name.
const files = find(testDist)
  .filter((f) => {
    const rel = `/${path.relative(testDist, f)}`;
    return filters.length === 0 || filters.some((s) => rel.includes(s));
  })
  .sort((a, b) => order(a) - order(b) || a.localeCompare(b));

let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];

function count(output, label) {
  const m = new RegExp(`${label}:\\s+(\\d+)`).exec(output);
  return m ? Number(m[1]) : 0;
}

// The e2e files share one lab: brought up once before the first of them, taken down after the last
// (also when they fail or the run is interrupted). Each file learns the outcome from TP_E2E_LAB.
let e2eRun = null;
let e2eSession = null;
const childEnv = { ...process.env };
async function beginE2e() {
  e2eSession = await import(path.join(root, 'dist', 'test', 'e2e', 'session.js'));
  e2eRun = await e2eSession.beginE2eRun();
  Object.assign(childEnv, e2eSession.e2eEnv(e2eRun));
  if (e2eRun.state !== 'up' && e2eRun.state !== 'external') process.stdout.write(`# e2e: ${e2eRun.state}\n`);
}
async function endE2e() {
  if (!e2eRun) return;
  const run = e2eRun;
  e2eRun = null;
  await e2eSession.endE2eRun(run);
}
// The file running now: each runs in a process group of its own (the group's id is its pid), so what it
// started and left behind can be ended with it, and a Ctrl-C reaches it only through this runner.
let current = null;
/** Set by Ctrl-C or SIGTERM to the exit code: no further file starts. */
let stopping = 0;

/** Asks the current file's process group to end (SIGTERM: its cleanup runs), then kills what is left. */
function stopCurrent() {
  const child = current;
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  signalGroup(child.pid, 'SIGTERM');
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signalGroup(child.pid, 'SIGKILL');
      resolve();
    }, cleanupGraceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Signals process group `pgid` (one this runner made), if it still has a process. */
function signalGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
  } catch {
    // no process left in the group
  }
}

/** The live processes (not zombies) of group `pgid`, as "pid command". */
function groupMembers(pgid) {
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const close = stat.lastIndexOf(')');
    const [state, , pgrp] = stat.slice(close + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z')
      found.push(`${entry} ${stat.slice(stat.indexOf('(') + 1, close)}`);
  }
  return found;
}

// Ctrl-C or SIGTERM: the running file is stopped (it cleans up), no further file starts, the lab is taken
// down as after the last file, and the run exits with the signal's code. A second one exits at once.
for (const [sig, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(sig, () => {
    if (stopping) process.exit(code);
    stopping = code;
    process.stdout.write(`\n# ${sig}: stopping the running test file, then the lab\n`);
    void stopCurrent();
  });
}

try {
  await runAll();
} finally {
  await endE2e();
}

async function runAll() {
  for (const file of files) {
    if (stopping) return;
    if (isE2e(file) && !e2eRun) await beginE2e();
    if (stopping) return;
    const rel = path.relative(testDist, file);
    process.stdout.write(`\n# ${rel}\n`);
    const result = await new Promise((resolve) => {
      const child = spawn(process.execPath, ['--enable-source-maps', '--import', exitOnSignal, file], {
        cwd: root,
        env: childEnv,
        stdio: ['ignore', 'pipe', 'inherit'],
        detached: true,
      });
      current = child;
      let output = '';
      child.stdout.on('data', (d) => {
        output += d;
        process.stdout.write(d);
      });
      const timer = setTimeout(() => {
        process.stdout.write(`\n# ${rel}: timed out after ${perFileTimeoutMs} ms: stopping it\n`);
        void stopCurrent();
      }, perFileTimeoutMs);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        current = null;
        // What the file started in its own group and left running (not the daemons, which start a
        // session of their own and which its rigs end) goes with it.
        const left = groupMembers(child.pid);
        if (left.length > 0) {
          signalGroup(child.pid, 'SIGKILL');
          process.stdout.write(
            `\n# ${rel} left processes running in its group (${left.join(', ')}): killed them\n`,
          );
        }
        resolve({ code, signal, output });
      });
    });
    const total = count(result.output, 'Total');
    const ok = count(result.output, 'Passed');
    const skip = count(result.output, 'Skipped');
    passed += ok;
    skipped += skip;
    const bad = total - ok;
    // A file whose tests were all skipped (e.g. e2e where the lab cannot run) is not a failure.
    if (result.code !== 0 || bad > 0 || (total === 0 && skip === 0)) {
      failed += Math.max(bad, 1);
      failures.push(rel);
      if (isE2e(file) && e2eRun) {
        const text = await e2eSession
          .clusterDiagnostics(e2eRun)
          .catch((e) => `(no diagnostics: ${e.message})\n`);
        if (text) process.stdout.write(`\n# ${rel} failed; the cluster at that moment:\n${text}`);
      }
    }
  }
}

if (failures.length) process.stdout.write(`\nFailed files:\n${failures.map((f) => `  ${f}`).join('\n')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(stopping || (failed > 0 || files.length === 0 ? 1 : 0));
