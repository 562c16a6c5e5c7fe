// tp-image's bad inputs: one line naming the fix, exit 1, no archive and no scratch files left behind.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const main = path.join(path.dirname(new URL(import.meta.url).pathname), 'main.js');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-image-cli-'));
const out = path.join(scratch, 'out', 'tp.tar');

function tpImage(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const before = fs
    .readdirSync(os.tmpdir())
    .filter((n) => n.startsWith('tp-image-'))
    .sort();
  const r = spawnSync(process.execPath, [main, '--out', out, ...args], {
    encoding: 'utf8',
    env,
    timeout: 120_000,
  });
  const after = fs
    .readdirSync(os.tmpdir())
    .filter((n) => n.startsWith('tp-image-'))
    .sort();
  assert.equal(after, before, 'scratch directories left behind');
  assert.not.ok(fs.existsSync(out), 'an archive was written');
  const leftovers = fs.existsSync(path.dirname(out)) ? fs.readdirSync(path.dirname(out)) : [];
  assert.equal(leftovers, [], 'partial files left behind');
  const lines = r.stderr.trim().split('\n');
  return { code: r.status, error: lines[lines.length - 1]! };
}

test('a node binary older than 20 is refused, saying how to give another', () => {
  const old = path.join(scratch, 'node18');
  fs.writeFileSync(old, '#!/bin/sh\necho v18.19.0\n', { mode: 0o755 });
  const r = tpImage(['--node', old]);
  assert.is(r.code, 1);
  assert.is(
    r.error,
    `tp-image: ${old} is Node v18.19.0; tp needs Node 20 or newer: install it, or pass --node PATH`,
  );
});

test('a missing host tool names the Debian package', () => {
  // A PATH with strip but without ldd.
  const bin = path.join(scratch, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync('/usr/bin/strip', path.join(bin, 'strip'));
  const r = tpImage([], { ...process.env, PATH: bin });
  assert.is(r.code, 1);
  assert.is(
    r.error,
    'tp-image: the image builder needs `ldd`, which is not installed: install it (apt-get install libc-bin)',
  );
});

test('an invalid image name says what a valid one looks like', () => {
  const r = tpImage(['--name', 'TP/tp:1']);
  assert.is(r.code, 1);
  assert.match(r.error, /^tp-image: invalid image name "TP\/tp:1": .*e\.g\. tp\/tp:0\.1\.0\)$/);
});

test.after(() => fs.rmSync(scratch, { recursive: true, force: true }));

test.run();
