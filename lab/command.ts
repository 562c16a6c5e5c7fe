// Runs the host tools the lab drives (ip, openssl, nsenter) and turns their failures into
// messages that say which command failed and what it printed.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly argv: string[],
    readonly result: CommandResult,
  ) {
    const detail = (result.stderr || result.stdout).trim().split('\n').slice(-5).join('\n  ');
    super(`\`${argv.join(' ')}\` failed (exit ${result.code})${detail ? `:\n  ${detail}` : ''}`);
  }
}

/** Runs a command to completion; throws CommandError when it exits non-zero (unless `check` is false). */
export function runCommand(
  argv: string[],
  options: { input?: string; check?: boolean; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
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
    const timer = options.timeoutMs
      ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs).unref()
      : undefined;
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      reject(err.code === 'ENOENT' ? missingTool(argv[0]!) : err);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const result = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      if (result.code !== 0 && options.check !== false) reject(new CommandError(argv, result));
      else resolve(result);
    });
    child.stdin.on('error', () => {
      // The command may exit before reading its input; its exit status tells what happened.
    });
    child.stdin.end(options.input ?? '');
  });
}

const toolPackages: Record<string, string> = {
  ip: 'iproute2',
  nsenter: 'util-linux',
  openssl: 'openssl',
  iptables: 'iptables',
  containerd: 'containerd',
  ctr: 'containerd',
  runc: 'runc',
  umount: 'mount',
};

export function missingTool(tool: string): UsageError {
  const pkg = toolPackages[tool];
  return new UsageError(
    `the lab needs \`${tool}\`, which is not installed${pkg ? `: install it (apt-get install ${pkg})` : ''} and run again`,
  );
}

/** Whether an executable is on PATH. */
export function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    try {
      fs.accessSync(path.join(dir, tool), fs.constants.X_OK);
      return true;
    } catch {
      // Not in this directory.
    }
  }
  return false;
}
