// The thin edge between tp-init and the kernel: every iptables-save, iptables-restore and iptables -C goes
// through a CommandRunner. Production runs the binaries through command/ (tp's one runner); tests record
// what would run and answer from a script.
import { type CommandResult as RunResult, runCommand } from '../command/command.js';
import { UsageError } from '../netaddr/parse.js';

export interface CommandResult extends RunResult {
  /** The binary is not on PATH. */
  notFound?: boolean;
}

export interface CommandRunner {
  run(command: string, args: readonly string[], input?: string): Promise<CommandResult>;
}

/** iptables-restore waits up to 30 s for the xtables lock (-w 30); leave it room, but never hang forever. */
const COMMAND_TIMEOUT_MS = 60_000;

export class ExecRunner implements CommandRunner {
  async run(command: string, args: readonly string[], input?: string): Promise<CommandResult> {
    try {
      return await runCommand([command, ...args], { input, check: false, timeoutMs: COMMAND_TIMEOUT_MS });
    } catch (e) {
      // Which backend's binaries exist is something tp-init asks, not a failure.
      if (e instanceof UsageError) return { code: 127, stdout: '', stderr: '', notFound: true };
      throw e;
    }
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
    return { code: 0, stdout: '', stderr: '', ...this.respond(call) };
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
