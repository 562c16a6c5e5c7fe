// `tp gather-logs`: one .tar.gz an admin attaches to a bug report — the workstation daemons' logs, the
// traffic manager's and the agents' logs fetched through the API server (kube/pod-logs.ts), the agent
// containers' environment and the workstation's TP_* settings with secret-looking values redacted, and an
// index (index.json) of what is inside and what could not be fetched. Written with tar-stream (already a
// dependency) and node:zlib; tp has no zip library, so .zip is refused with that reason.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import * as tar from 'tar-stream';
import { UsageError } from '../netaddr/parse.js';

export type DaemonChoice = 'all' | 'user' | 'root' | 'none';

export function parseDaemonChoice(value: string): DaemonChoice {
  if (value === 'all' || value === 'user' || value === 'root' || value === 'none') return value;
  throw new UsageError(`invalid --daemons "${value}": use all, user, root or none`);
}

/** The archive's path: FILE.tar.gz or FILE.tgz; default tp-logs-<UTC time>.tar.gz here. */
export function archivePath(requested: string | undefined, now: Date): string {
  if (!requested)
    return `tp-logs-${now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z')}.tar.gz`;
  if (/\.zip$/i.test(requested))
    throw new UsageError(
      `-o ${requested}: tp writes .tar.gz archives (it has no zip library): use -o ${requested.replace(/\.zip$/i, '.tar.gz')}`,
    );
  if (!/\.(tar\.gz|tgz)$/.test(requested))
    throw new UsageError(`-o ${requested}: the archive is a gzipped tar: name it FILE.tar.gz or FILE.tgz`);
  return requested;
}

const SECRET_NAME = /TOKEN|SECRET|PASSW|KEY|CREDENTIAL|AUTH|CERT|PRIVATE/i;
/** Where a secret is, not the secret: TP_MANAGER_TOKEN_FILE is a path. */
const PATH_NAME = /_(FILE|PATH|DIR)$/i;
export const REDACTED = '<redacted>';

/** An environment as NAME=value lines, the values of secret-looking names redacted (references kept). */
export function redactEnv(env: [string, string][]): string {
  return env
    .map(
      ([name, value]) =>
        `${name}=${SECRET_NAME.test(name) && !PATH_NAME.test(name) && !value.startsWith('<from ') ? REDACTED : value}`,
    )
    .join('\n')
    .concat(env.length ? '\n' : '');
}

/** Log text with bearer tokens and token/password/secret values redacted. */
export function redactLog(text: string): string {
  return text
    .replace(/(Bearer\s+)[A-Za-z0-9._~+/=-]+/g, `$1${REDACTED}`)
    .replace(
      /((?:token|password|passwd|secret|credential)s?["']?\s*[:=]\s*["']?)[^\s"',}]+/gi,
      `$1${REDACTED}`,
    );
}

/** The daemon log files of logDir: connector*.log (user daemon), daemon*.log (root daemon). */
export function daemonLogFiles(logDir: string, choice: DaemonChoice): string[] {
  if (choice === 'none' || !fs.existsSync(logDir)) return [];
  const want = (f: string) =>
    ((choice === 'all' || choice === 'user') && /^connector.*\.log$/.test(f)) ||
    ((choice === 'all' || choice === 'root') && /^daemon.*\.log$/.test(f));
  return fs
    .readdirSync(logDir)
    .filter(want)
    .sort()
    .map((f) => path.join(logDir, f));
}

export interface ArchiveFile {
  /** Inside the archive, below tp-logs/. */
  name: string;
  /** Where it came from, for the index. */
  source: string;
  content: string;
}

export interface ArchiveIndex {
  createdAt: string;
  tpVersion: string;
  files: { name: string; source: string; bytes: number }[];
  /** What could not be gathered, and why. */
  errors: string[];
}

/** Writes tp-logs/index.json and the files into a gzipped tar at `file`; returns the index. */
export async function writeArchive(
  file: string,
  files: ArchiveFile[],
  errors: string[],
  meta: { now: Date; version: string },
): Promise<ArchiveIndex> {
  const index: ArchiveIndex = {
    createdAt: meta.now.toISOString(),
    tpVersion: meta.version,
    files: files.map((f) => ({ name: f.name, source: f.source, bytes: Buffer.byteLength(f.content) })),
    errors,
  };
  const pack = tar.pack();
  const add = (name: string, content: string) =>
    new Promise<void>((resolve, reject) =>
      pack.entry({ name: `tp-logs/${name}`, mode: 0o600, mtime: meta.now }, content, (e) =>
        e ? reject(e) : resolve(),
      ),
    );
  const written = pipeline(
    Readable.from(pack),
    zlib.createGzip(),
    fs.createWriteStream(file, { mode: 0o600 }),
  );
  await add('index.json', `${JSON.stringify(index, null, 2)}\n`);
  for (const f of files) await add(f.name, f.content);
  pack.finalize();
  await written;
  return index;
}

/** The entries of a .tar.gz (name -> content): for tests and for checking an archive. */
export async function readArchive(file: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c) => chunks.push(c as Buffer));
    stream.on('end', () => {
      out.set(header.name, Buffer.concat(chunks).toString('utf8'));
      next();
    });
  });
  await pipeline(fs.createReadStream(file), zlib.createGunzip(), extract);
  return out;
}
