// Runs every compiled test file (dist/**/*.test.js) in its own process, so a test that crashes or
// leaves a handle open cannot take the others down, and prints one closing line:
// "N passed, N failed, N skipped". Usage: node test/run.mjs [substring filter…]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(new URL('..', import.meta.url).pathname);
const filters = process.argv.slice(2);
const perFileTimeoutMs = Number(process.env.TP_TEST_FILE_TIMEOUT_MS ?? 10 * 60_000);

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
const files = find(path.join(root, 'dist'))
  .filter((f) => {
    const rel = `/${path.relative(path.join(root, 'dist'), f)}`;
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
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, async () => {
    await endE2e().catch(() => {});
    process.exit(130);
  });
}

try {
  await runAll();
} finally {
  await endE2e();
}

async function runAll() {
  for (const file of files) {
    if (isE2e(file) && !e2eRun) await beginE2e();
    const rel = path.relative(path.join(root, 'dist'), file);
    process.stdout.write(`\n# ${rel}\n`);
    const result = await new Promise((resolve) => {
      const child = spawn(process.execPath, ['--enable-source-maps', file], {
        cwd: root,
        env: childEnv,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let output = '';
      child.stdout.on('data', (d) => {
        output += d;
        process.stdout.write(d);
      });
      const timer = setTimeout(() => {
        process.stdout.write(`\n# ${rel}: timed out after ${perFileTimeoutMs} ms\n`);
        child.kill('SIGKILL');
      }, perFileTimeoutMs);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
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
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
