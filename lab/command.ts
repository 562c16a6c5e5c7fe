// The lab runs host tools through command/ (the one runner), saying "the lab needs …" when one is missing.
import {
  type CommandResult,
  missingTool as missing,
  type RunOptions,
  runCommand as run,
} from '../command/command.js';

export { CommandError, type CommandResult, onPath } from '../command/command.js';

export function runCommand(argv: string[], options: Omit<RunOptions, 'who'> = {}): Promise<CommandResult> {
  return run(argv, { ...options, who: 'the lab' });
}

export function missingTool(tool: string) {
  return missing(tool, 'the lab');
}
