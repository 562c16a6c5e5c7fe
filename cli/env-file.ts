// The intercepted container's environment as a file a shell, docker --env-file or an IDE can load.
/** KEY=VALUE lines, sorted; values that need it are double-quoted with \\, " and newlines escaped. */
export function renderEnvFile(env: Record<string, string>): string {
  return Object.keys(env)
    .sort()
    .map((k) => {
      const v = env[k]!;
      const plain = /^[A-Za-z0-9_./:@%+,-]*$/.test(v);
      return `${k}=${plain ? v : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`}`;
    })
    .map((line) => `${line}\n`)
    .join('');
}
