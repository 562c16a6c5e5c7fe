// The intercepted (or ingested) container's environment as a file a shell, docker, docker compose or an IDE
// can load (--env-syntax). Every syntax writes each value byte for byte or leaves the variable out and
// says so: a value a syntax cannot hold (a newline for docker's --env-file, a name no shell accepts) is
// never written mangled.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

export const ENV_SYNTAXES = ['compose', 'docker', 'sh', 'json'] as const;
export type EnvSyntax = (typeof ENV_SYNTAXES)[number];

export function parseEnvSyntax(value: string): EnvSyntax {
  if ((ENV_SYNTAXES as readonly string[]).includes(value)) return value as EnvSyntax;
  throw new UsageError(`--env-syntax "${value}" is not known: use ${ENV_SYNTAXES.join(', ')}`);
}

export interface RenderedEnv {
  text: string;
  /** Variables left out, each with the reason. */
  skipped: { name: string; reason: string }[];
}

const SH_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * compose (the default): KEY=VALUE, values that need it double-quoted with \\, \" and \n escaped (docker
 * compose's env_file, dotenv libraries, tp's own agent). docker: `docker run --env-file`, which takes the
 * rest of the line as is: no quoting, so values with a newline are left out. sh: `export KEY='VALUE'`, any
 * value (a ' becomes '\''), names a shell accepts. json: one object.
 */
export function renderEnv(env: Record<string, string>, syntax: EnvSyntax = 'compose'): RenderedEnv {
  const names = Object.keys(env).sort();
  const skipped: RenderedEnv['skipped'] = [];
  if (syntax === 'json') {
    const sorted = Object.fromEntries(names.map((k) => [k, env[k]!]));
    return { text: `${JSON.stringify(sorted, null, 2)}\n`, skipped };
  }
  const lines: string[] = [];
  for (const k of names) {
    const v = env[k]!;
    if (syntax === 'docker') {
      if (/[\r\n]/.test(v)) skipped.push({ name: k, reason: "docker's --env-file cannot hold a newline" });
      else lines.push(`${k}=${v}`);
    } else if (syntax === 'sh') {
      if (!SH_NAME.test(k)) skipped.push({ name: k, reason: 'not a name a shell accepts' });
      else lines.push(`export ${k}='${v.replace(/'/g, `'\\''`)}'`);
    } else {
      const plain = /^[A-Za-z0-9_./:@%+,-]*$/.test(v);
      lines.push(
        `${k}=${plain ? v : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r/g, '\\r').replace(/\n/g, '\\n')}"`}`,
      );
    }
  }
  return { text: lines.map((l) => `${l}\n`).join(''), skipped };
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
