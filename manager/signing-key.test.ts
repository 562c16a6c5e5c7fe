// The manager's signing key file (the chart's Secret): read when configured, refused with the fix when
// unreadable or too short, random when not configured.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../netaddr/parse.js';
import { KEY_BYTES } from './credentials.js';
import { loadSigningKey } from './signing-key.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-signing-key-'));
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('the key file is read as it is; two managers reading it share the key', () => {
  const file = path.join(dir, 'key');
  fs.writeFileSync(file, Buffer.alloc(KEY_BYTES, 7));
  const a = loadSigningKey(file);
  assert.equal(a.key, Buffer.alloc(KEY_BYTES, 7));
  assert.is(a.source, file);
  assert.equal(loadSigningKey(file).key, a.key);
});

test('no key file configured: a random key of its own, said so', () => {
  const a = loadSigningKey(undefined);
  assert.is(a.key.length, KEY_BYTES);
  assert.not.equal(loadSigningKey(undefined).key, a.key);
  assert.match(a.source, 'random');
});

test('a missing or short key file stops the manager with the fix', () => {
  assert.throws(
    () => loadSigningKey(path.join(dir, 'absent')),
    (e: Error) =>
      e instanceof UsageError &&
      /ENOENT/.test(e.message) &&
      /Secret <release name>-signing-key/.test(e.message),
  );
  const short = path.join(dir, 'short');
  fs.writeFileSync(short, 'abc');
  assert.throws(
    () => loadSigningKey(short),
    (e: Error) => e instanceof UsageError && /holds 3 bytes, fewer than the 32/.test(e.message),
  );
});

test.run();
