// The intercepted container's environment as a file a shell, docker --env-file or an IDE can load.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

/** KEY=VALUE lines, sorted; values that need it are double-quoted with \\, " and newlines escaped. */
export function renderEnvFile(env: Record<string, string>): string {
  return Object.keys(env)
    .sort()
    .map((k) => {
      const v = env[k]!;
      const plain = /^[A-Za-z0-9_./:@%+,-]*$/.test(v);
      return `${k}=${plain ? v : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`}`;
    })
    .map((line) => `${line}\n`)
    .join('');
}

/**
 * Checks, before the intercept is created, that `file` can be written: its directory exists and the path
 * is not a directory. The message names the flag and the fix.
 */
export function checkEnvOutput(file: string, flag: string): void {
  const dir = path.dirname(path.resolve(file));
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new UsageError(
      `${flag} ${file}: the directory ${dir} does not exist: create it, or choose another path`,
    );
  }
  if (!st.isDirectory()) throw new UsageError(`${flag} ${file}: ${dir} is not a directory`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new UsageError(`${flag} ${file}: the directory ${dir} is not writable: choose another path`);
  }
  if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory())
    throw new UsageError(`${flag} ${file}: that is a directory: give a file name`);
}

/**
 * Writes the environment (its values may be secrets) readable by the owner only: mode 0600 also when the
 * file existed with another mode, set before any byte is written.
 */
export function writeSecretFile(file: string, text: string): void {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    fs.fchmodSync(fd, 0o600);
    fs.writeFileSync(fd, text);
  } finally {
    fs.closeSync(fd);
  }
}
