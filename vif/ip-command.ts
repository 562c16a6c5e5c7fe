// Running iproute2's `ip` in the current network namespace, through command/ (tp's one runner). Kept behind
// a small interface so the pure planning code can be tested with a recorder, and the real commands run in
// network namespaces.
import { runCommand } from '../command/command.js';

export { CommandError } from '../command/command.js';

export interface IpCommands {
  /** Runs `ip ARGS…` and returns its stdout; throws CommandError when it fails. */
  ip(args: string[]): Promise<string>;
}

export const systemCommands: IpCommands = {
  ip: async (args) => (await runCommand(['ip', ...args], { timeoutMs: 15_000 })).stdout,
};
