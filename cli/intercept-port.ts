// The --port flag of tp intercept: LOCAL[:REMOTE]. The numbers go through the one port parser.
import { parsePort, UsageError } from '../netaddr/parse.js';

/** The local port, and the workload's port (0: its only one). */
export function parseInterceptPort(value: string): { local: number; remote: number } {
  const parts = value.split(':');
  if (parts.length > 2 || parts[0] === '')
    throw new UsageError(`invalid --port "${value}": expected LOCAL[:REMOTE], e.g. 8080 or 18090:18080`);
  return {
    local: parsePort(parts[0]!, 'local port'),
    remote: parts.length === 2 ? parsePort(parts[1]!, 'remote port') : 0,
  };
}
