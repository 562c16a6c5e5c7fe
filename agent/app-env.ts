// The environment of the app in standalone mode (no TP_CONTAINERS; in a pod, containers.ts reads each
// app container's environment the injector copied under TP_APPENV_<n>_): TP_APP_ENV_FILE names a
// KEY=VALUE file; without it, the agent's own environment minus its TP_* settings stands in.
import * as fs from 'node:fs';
import { ENV } from '../agentconfig/env.js';
import { UsageError } from '../netaddr/parse.js';

/** KEY=VALUE lines; blank lines and # comments are skipped; values may be 'single' or "double" quoted. */
export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$/.exec(line);
    if (!m) throw new UsageError(`line ${i + 1} is not KEY=VALUE: "${line}"`);
    let value = m[2]!;
    const q = value[0];
    if ((q === '"' || q === "'") && value.length >= 2 && value.endsWith(q)) {
      value = value.slice(1, -1);
      if (q === '"') value = value.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    env[m[1]!] = value;
  }
  return env;
}

export function appEnvironment(file: string | undefined, own: NodeJS.ProcessEnv): Record<string, string> {
  if (file) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`${ENV.appEnvFile}=${file} cannot be read: ${(e as Error).message}`);
    }
    try {
      return parseEnvFile(text);
    } catch (e) {
      throw new UsageError(`${ENV.appEnvFile}=${file}: ${(e as Error).message}`);
    }
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(own)) if (!k.startsWith('TP_') && v !== undefined) env[k] = v;
  return env;
}
