// Runs every compiled test file (dist/**/*.test.js) in its own process, so a test that crashes or
// leaves a handle open cannot take the others down, and prints one closing line:
// "N passed, N failed, N skipped". Usage: node test/run.mjs [substring filter…]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(new URL('..', import.meta.url).pathname);
const filters = process.argv.slice(2);
const perFileTimeoutMs = Number(process.env.TP_TEST_FILE_TIMEOUT_MS ?? 20 * 60_000);

function find(dir, out = []) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') find(p, out);
    } else if (entry.name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

// Unit tests first, then the ones that use network namespaces, then the lab's e2e scenarios.
const order = (f) => (f.includes('/e2e/') ? 2 : f.includes('.netns.') ? 1 : 0);
const files = find(path.join(root, 'dist'))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort((a, b) => order(a) - order(b) || a.localeCompare(b));

let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];

function count(output, label) {
  const m = new RegExp(`${label}:\\s+(\\d+)`).exec(output);
  return m ? Number(m[1]) : 0;
}

for (const file of files) {
  const rel = path.relative(path.join(root, 'dist'), file);
  process.stdout.write(`\n# ${rel}\n`);
  const result = await new Promise((resolve) => {
    const child = spawn(process.execPath, ['--enable-source-maps', file], {
      cwd: root,
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
  if (result.code !== 0 || bad > 0 || total === 0) {
    failed += Math.max(bad, 1);
    failures.push(rel);
  }
}

if (failures.length) process.stdout.write(`\nFailed files:\n${failures.map((f) => `  ${f}`).join('\n')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
