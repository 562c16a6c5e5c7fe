// tp completion: the scripts for each shell, and the bash one run by a real bash (zsh and fish are not
// installed here: their scripts are checked as text).
import { spawnSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type CommandSpec, completionScript, parseShell } from './completion.js';

const commands: CommandSpec[] = [
  { name: 'list', flags: ['--namespace', '--all-namespaces', '--watch', '--help'], subcommands: [] },
  { name: 'leave', flags: ['--help'], subcommands: [] },
  {
    name: 'helm',
    flags: ['--help'],
    subcommands: [
      { name: 'install', flags: ['--set', '--values', '--help'], subcommands: [] },
      { name: 'uninstall', flags: ['--help'], subcommands: [] },
    ],
  },
];

/** What bash completes for the words typed so far (the last one being completed). */
function complete(typed: string[]): string[] {
  const script = completionScript('bash', commands);
  const words = typed.map((w) => `'${w}'`).join(' ');
  const r = spawnSync(
    'bash',
    [
      '-c',
      `${script}\nCOMP_WORDS=(${words}); COMP_CWORD=${typed.length - 1}; _tp; printf '%s\\n' "\${COMPREPLY[@]}"`,
    ],
    { encoding: 'utf8' },
  );
  assert.is(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean);
}

test('bash completes commands, subcommands and flags', () => {
  assert.equal(complete(['tp', 'l']), ['list', 'leave']);
  assert.equal(complete(['tp', 'list', '--w']), ['--watch']);
  assert.equal(complete(['tp', 'list', '--']), ['--namespace', '--all-namespaces', '--watch', '--help']);
  assert.equal(complete(['tp', 'helm', 'un']), ['uninstall']);
  assert.equal(complete(['tp', 'helm', 'install', '--s']), ['--set']);
  assert.equal(complete(['tp', 'list', 'x']), [], 'no flag completion for a word that is not a flag');
});

test('zsh reuses the bash function through bashcompinit; fish has one complete line per flag', () => {
  const z = completionScript('zsh', commands);
  assert.match(z, /^#compdef tp\n/);
  assert.match(z, /bashcompinit/);
  assert.match(z, /complete -o default -F _tp tp/);
  const f = completionScript('fish', commands);
  assert.match(f, "complete -c tp -f -n __fish_use_subcommand -a 'list leave helm'");
  assert.match(f, "complete -c tp -n '__fish_seen_subcommand_from list' -l watch");
  assert.match(
    f,
    "complete -c tp -n '__fish_seen_subcommand_from helm; and __fish_seen_subcommand_from install' -l set",
  );
  assert.throws(() => parseShell('powershell'), /unsupported shell "powershell": use bash, zsh or fish/);
});

test.run();
