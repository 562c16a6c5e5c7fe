// Running iproute2's `ip` in the current network namespace. Kept behind a small interface so the pure
// planning code can be tested with a recorder, and the real commands run in network namespaces.
import { execFile } from 'node:child_process';

export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly command: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(
      `${command} failed${exitCode === null ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || 'no output'}`,
    );
  }
}

export interface CommandRunner {
  /** Runs `ip ARGS…` and returns its stdout; throws CommandError when it fails. */
  ip(args: string[]): Promise<string>;
}

export const systemCommands: CommandRunner = {
  ip: (args) =>
    new Promise((resolve, reject) => {
      execFile('ip', args, { timeout: 15_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        const code = typeof error.code === 'number' ? error.code : null;
        if ((error as NodeJS.ErrnoException).code === 'ENOENT')
          return reject(new Error('the `ip` command is missing: install iproute2'));
        reject(new CommandError(`ip ${args.join(' ')}`, stderr || error.message, code));
      });
    }),
};
