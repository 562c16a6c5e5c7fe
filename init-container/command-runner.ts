// The thin edge between tp-init and the kernel: every iptables-save, iptables-restore and iptables -C goes
// through a CommandRunner. Production runs the binaries; tests record what would run and answer from a script.
import { spawn } from 'node:child_process';

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** The binary is not on PATH. */
  notFound?: boolean;
}

export interface CommandRunner {
  run(command: string, args: readonly string[], input?: string): Promise<CommandResult>;
}

/** iptables-restore waits up to 30 s for the xtables lock (-w 30); leave it room, but never hang forever. */
const COMMAND_TIMEOUT_MS = 60_000;

export class ExecRunner implements CommandRunner {
  run(command: string, args: readonly string[], input?: string): Promise<CommandResult> {
    return new Promise((resolve) => {
      const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      // Our own timer, cleared on every outcome: spawn's `timeout` option stays armed (and keeps the
      // process alive) when the binary is missing and no exit event comes.
      const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
      const finish = (result: CommandResult) => {
        clearTimeout(timer);
        resolve(result);
      };
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
      });
      child.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') finish({ exitCode: 127, stdout: '', stderr: '', notFound: true });
        else finish({ exitCode: 126, stdout, stderr: `${command}: ${err.message}` });
      });
      child.on('close', (code, signal) => {
        finish({
          exitCode: code ?? 128,
          stdout,
          stderr: signal ? `${stderr}${command}: killed by ${signal}` : stderr,
        });
      });
      // A closed stdin (EPIPE) shows up as the command's own error.
      child.stdin.on('error', () => {});
      child.stdin.end(input ?? '');
    });
  }
}

export interface RecordedCall {
  command: string;
  args: readonly string[];
  input?: string;
}

/** Answers a call; returning a partial result fills in exit code 0 and empty output. */
export type ScriptedResponse = (call: RecordedCall) => Partial<CommandResult>;

/** The stub for golden tests: records every call in order and answers from a script. */
export class RecordingRunner implements CommandRunner {
  readonly calls: RecordedCall[] = [];

  constructor(private readonly respond: ScriptedResponse = () => ({})) {}

  async run(command: string, args: readonly string[], input?: string): Promise<CommandResult> {
    const call: RecordedCall = input === undefined ? { command, args } : { command, args, input };
    this.calls.push(call);
    return { exitCode: 0, stdout: '', stderr: '', ...this.respond(call) };
  }

  /** The calls as a shell-like transcript, stdin shown indented under its command. */
  transcript(): string {
    return this.calls
      .map((c) => {
        const words = [c.command, ...c.args].map((a) => (/[\s"'()!]/.test(a) ? `'${a}'` : a));
        const head = `$ ${words.join(' ')}`;
        if (!c.input) return `${head}\n`;
        const body = c.input
          .replace(/\n$/, '')
          .split('\n')
          .map((l) => `  | ${l}`);
        return `${head}\n${body.join('\n')}\n`;
      })
      .join('');
  }
}
