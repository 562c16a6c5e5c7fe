// The one way tp runs a host tool (ip, iptables-restore, openssl, nsenter, containerd's ctr…): to completion,
// with its output collected, a bounded time, and failures that say which command failed and what it printed.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

export interface CommandResult {
  /** The exit status; 128 when a signal ended it, 126 when it could not be started. */
  code: number;
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly argv: readonly string[],
    readonly result: CommandResult,
  ) {
    const detail = (result.stderr || result.stdout).trim().split('\n').slice(-5).join('\n  ');
    super(`\`${argv.join(' ')}\` failed (exit ${result.code})${detail ? `:\n  ${detail}` : ''}`);
  }
}

export interface RunOptions {
  /** Written to the command's stdin (which is closed either way). */
  input?: string;
  /** Throw CommandError when the command exits non-zero (default true). */
  check?: boolean;
  env?: NodeJS.ProcessEnv;
  /** SIGKILL after this long (the result then says "killed by SIGKILL"). */
  timeoutMs?: number;
  /** Who needs the tool, for the message when it is not installed (default "tp"). */
  who?: string;
}

/**
 * Runs argv to completion. Rejects with a UsageError naming the package when the binary is not installed,
 * and with CommandError when it exits non-zero (unless `check` is false).
 */
export function runCommand(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const tool = argv[0];
  if (!tool) return Promise.reject(new Error('runCommand: empty command line'));
  return new Promise((resolve, reject) => {
    const child = spawn(tool, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    // Our own timer, cleared on every outcome: spawn's `timeout` option stays armed (and keeps the process
    // alive) when the binary is missing and no exit event comes.
    const timer = options.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs) : undefined;
    let settled = false;
    const finish = (result: CommandResult) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      if (result.code !== 0 && options.check !== false) reject(new CommandError(argv, result));
      else resolve(result);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') return finish({ code: 126, stdout, stderr: `${tool}: ${err.message}` });
      clearTimeout(timer);
      settled = true;
      reject(missingTool(tool, options.who));
    });
    child.on('close', (code, signal) =>
      finish({
        code: code ?? 128,
        stdout,
        stderr: signal ? `${stderr}${tool}: killed by ${signal}` : stderr,
      }),
    );
    // The command may exit before reading its input (EPIPE): its exit status tells what happened.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

const toolPackages: Record<string, string> = {
  ip: 'iproute2',
  nsenter: 'util-linux',
  openssl: 'openssl',
  iptables: 'iptables',
  'iptables-restore': 'iptables',
  'iptables-save': 'iptables',
  'ip6tables-restore': 'iptables',
  'ip6tables-save': 'iptables',
  'iptables-legacy-restore': 'iptables',
  'iptables-nft-restore': 'iptables',
  containerd: 'containerd',
  ctr: 'containerd',
  runc: 'runc',
  umount: 'mount',
};

/** "WHO needs `tool`, which is not installed: install it (apt-get install PKG) and run again". */
export function missingTool(tool: string, who = 'tp'): UsageError {
  const pkg = toolPackages[path.basename(tool)];
  return new UsageError(
    `${who} needs \`${tool}\`, which is not installed${pkg ? `: install it (apt-get install ${pkg})` : ''} and run again`,
  );
}

/** Whether `file` is a regular file this process may execute. */
export function isExecutableFile(file: string): boolean {
  try {
    if (!fs.statSync(file).isFile()) return false;
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where `tool` is on `env`'s PATH (the first executable file of that name), or undefined. */
export function findOnPath(tool: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, tool);
    if (isExecutableFile(file)) return file;
  }
  return undefined;
}

/** Whether an executable is on PATH. */
export function onPath(tool: string): boolean {
  return findOnPath(tool) !== undefined;
}
