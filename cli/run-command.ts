// `tp intercept … -- CMD [ARGS…]` and `tp ingest … -- CMD [ARGS…]`: the command runs with the container's
// environment for as long as the intercept (or ingest) lasts; when it exits, tp leaves the intercept and
// exits with the command's status. The command is checked before anything is created, so a typo in it
// leaves no intercept behind.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as tty from 'node:tty';
import { findOnPath, isExecutableFile } from '../command/command.js';
import { UsageError } from '../netaddr/parse.js';

/**
 * The command after `--`, or undefined when there is none. `operands` are what the parser left after the
 * workload; `argv` the raw arguments, which tell whether `--` was typed (an operand without it is a typo
 * the parser would otherwise run).
 */
export function commandAfterDashes(
  commandName: string,
  operands: readonly string[],
  argv: readonly string[],
): string[] | undefined {
  const dashes = argv.includes('--');
  if (!dashes && operands.length > 0)
    throw new UsageError(
      `unexpected argument "${operands[0]}" after the workload: to run a command with the ${commandName}, put it after -- (tp ${commandName} WORKLOAD … -- COMMAND ARGS…)`,
    );
  if (dashes && operands.length === 0)
    throw new UsageError('nothing after --: give the command to run, or leave -- out');
  return dashes ? [...operands] : undefined;
}

/**
 * Where `program` would be found (the workstation's PATH), or a UsageError that says why it cannot run.
 * Checked before the intercept is created.
 */
export function findProgram(program: string, env: NodeJS.ProcessEnv = process.env): string {
  if (program.includes('/')) {
    if (isExecutableFile(program)) return program;
    throw new UsageError(
      fs.existsSync(program)
        ? `cannot run "${program}": it is not an executable file`
        : `cannot run "${program}": no such file`,
    );
  }
  const found = findOnPath(program, env);
  if (found) return found;
  throw new UsageError(`cannot run "${program}": not found on PATH`);
}

/**
 * The command's environment: the workstation's, with the container's on top (its values win: that is the
 * point), except PATH, which stays the workstation's: the command is a workstation program, and a
 * container's PATH names its image's directories.
 */
export function commandEnvironment(
  local: NodeJS.ProcessEnv,
  container: Record<string, string>,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...local, ...container };
  if (local.PATH !== undefined) env.PATH = local.PATH;
  return env;
}

/** A shell's exit status for a child that ended: its code, or 128 + the signal's number. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal ? os.constants.signals[signal] : undefined;
  return n === undefined ? 1 : 128 + n;
}

/**
 * Runs the command with the terminal (stdin, stdout, stderr) and resolves with its exit status. While it
 * runs, SIGTERM and SIGHUP sent to tp are passed on to it and tp waits for it to end; so is SIGINT when tp
 * has no terminal. A Ctrl-C at a terminal reaches the command by itself (it is in the terminal's
 * foreground process group, as tp is): tp only waits for it, so the command gets one SIGINT, not two.
 */
export function runCommand(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    // The handlers first: a signal that comes as soon as the command runs must not end tp without it.
    let child: ChildProcess | undefined;
    const pass = (signal: NodeJS.Signals) => () => {
      if (child && child.exitCode === null && child.signalCode === null) child.kill(signal);
    };
    const handlers: [NodeJS.Signals, () => void][] = [
      ['SIGTERM', pass('SIGTERM')],
      ['SIGHUP', pass('SIGHUP')],
      // isatty, not process.stdin: creating that stream could take input meant for the command.
      ['SIGINT', tty.isatty(0) ? () => {} : pass('SIGINT')],
    ];
    for (const [signal, handler] of handlers) process.on(signal, handler);
    child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env });
    let settled = false;
    const done = (status: number) => {
      if (settled) return;
      settled = true;
      for (const [signal, handler] of handlers) process.off(signal, handler);
      resolve(status);
    };
    child.once('error', (e: NodeJS.ErrnoException) => {
      process.stderr.write(`tp: cannot run "${argv[0]}": ${e.message}\n`);
      done(e.code === 'ENOENT' ? 127 : 126);
    });
    child.once('exit', (code, signal) => done(exitStatus(code, signal)));
  });
}
