// `tp completion bash|zsh|fish`: a shell script completing tp's commands, subcommands and flags, generated
// from the commands as the CLI defines them (pure: the caller passes their names and flags).
import { UsageError } from '../netaddr/parse.js';

export interface CommandSpec {
  name: string;
  /** `--long` (or `-s` when there is no long form) of each flag. */
  flags: string[];
  subcommands: CommandSpec[];
}

export type Shell = 'bash' | 'zsh' | 'fish';

export function parseShell(value: string): Shell {
  if (value === 'bash' || value === 'zsh' || value === 'fish') return value;
  throw new UsageError(`unsupported shell "${value}": use bash, zsh or fish`);
}

const words = (xs: string[]) => xs.join(' ');
/** `${COMP_WORDS[i]}` in the bash script. */
const word = (i: string) => `"\${COMP_WORDS[${i}]}"`;

function bash(commands: CommandSpec[]): string {
  const cases = commands.map((c) => {
    if (c.subcommands.length === 0) return `    ${c.name}) opts="${words(c.flags)}" ;;`;
    const subs = c.subcommands.map((s) => `        ${s.name}) opts="${words(s.flags)}" ;;`).join('\n');
    return [
      `    ${c.name})`,
      '      if [ "$COMP_CWORD" -eq 2 ]; then',
      `        COMPREPLY=($(compgen -W "${words(c.subcommands.map((s) => s.name))}" -- "$cur"))`,
      '        return',
      '      fi',
      `      case ${word('2')} in`,
      subs,
      '      esac ;;',
    ].join('\n');
  });
  return [
    '# tp completion for bash: source <(tp completion bash), or save it in /etc/bash_completion.d/tp',
    '_tp() {',
    `  local cur=${word('COMP_CWORD')} opts=""`,
    '  if [ "$COMP_CWORD" -eq 1 ]; then',
    `    COMPREPLY=($(compgen -W "${words(commands.map((c) => c.name))}" -- "$cur"))`,
    '    return',
    '  fi',
    `  case ${word('1')} in`,
    ...cases,
    '  esac',
    '  if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); else COMPREPLY=(); fi',
    '}',
    'complete -o default -F _tp tp',
    '',
  ].join('\n');
}

function zsh(commands: CommandSpec[]): string {
  // zsh runs the bash function through bashcompinit: one definition of what completes.
  return [
    '#compdef tp',
    '# tp completion for zsh: source <(tp completion zsh), or save it as _tp in a directory of $fpath',
    'autoload -U +X bashcompinit && bashcompinit',
    bash(commands).split('\n').slice(1).join('\n'),
  ].join('\n');
}

function fish(commands: CommandSpec[]): string {
  const quote = (s: string) => `'${s.replace(/'/g, "\\'")}'`;
  const lines = [
    '# tp completion for fish: tp completion fish | source, or save it as ~/.config/fish/completions/tp.fish',
    `complete -c tp -f -n __fish_use_subcommand -a ${quote(words(commands.map((c) => c.name)))}`,
  ];
  const flag = (cond: string, f: string) =>
    f.startsWith('--')
      ? `complete -c tp -n ${quote(cond)} -l ${f.slice(2)}`
      : `complete -c tp -n ${quote(cond)} -s ${f.slice(1)}`;
  for (const c of commands) {
    const inCommand = `__fish_seen_subcommand_from ${c.name}`;
    if (c.subcommands.length > 0)
      lines.push(
        `complete -c tp -f -n ${quote(`${inCommand}; and not __fish_seen_subcommand_from ${words(c.subcommands.map((s) => s.name))}`)} -a ${quote(words(c.subcommands.map((s) => s.name)))}`,
      );
    for (const f of c.flags) lines.push(flag(inCommand, f));
    for (const s of c.subcommands)
      for (const f of s.flags) lines.push(flag(`${inCommand}; and __fish_seen_subcommand_from ${s.name}`, f));
  }
  return `${lines.join('\n')}\n`;
}

export function completionScript(shell: Shell, commands: CommandSpec[]): string {
  return shell === 'bash' ? bash(commands) : shell === 'zsh' ? zsh(commands) : fish(commands);
}
