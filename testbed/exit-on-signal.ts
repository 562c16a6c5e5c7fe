// Preloaded into every test file by test/run.mjs (node --import): SIGTERM and SIGINT end the test
// process through process.exit, so the 'exit' handlers of its rigs and testbeds run (they remove the
// network namespaces, end the processes and daemons they started). Node's default for these signals
// ends the process at once, without them: the runner sends SIGTERM when a file runs out of time or the
// run itself is interrupted, and nothing the file started would be cleaned up.
for (const [signal, code] of [
  ['SIGTERM', 143],
  ['SIGINT', 130],
] as const) {
  process.once(signal, () => {
    process.stderr.write(`\n# ${signal}: cleaning up and exiting\n`);
    process.exit(code);
  });
}
