// The --port flag of tp intercept: LOCAL[:REMOTE]. The numbers go through the one port parser. And the
// personal intercept's --http-* flags.
import { isPersonal, parseHeaderFlag } from '../http-filter/filter.js';
import { parsePort, UsageError } from '../netaddr/parse.js';
import type { HttpFilter } from '../rpc/gen/manager.js';

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

/**
 * The personal intercept's flags → the filter the manager validates (undefined: a global intercept). The
 * CLI checks only the shape of --http-header; the manager refuses what cannot match (a bad regex).
 */
export function httpFilterOf(flags: {
  httpHeader: string[];
  httpPathPrefix?: string;
  httpPathEqual?: string;
  httpPathRegex?: string;
}): HttpFilter | undefined {
  const headers = flags.httpHeader.map((h) => {
    const parsed = parseHeaderFlag(h);
    if ('error' in parsed) throw new UsageError(parsed.error);
    return parsed;
  });
  const filter: HttpFilter = {
    headers,
    pathPrefix: flags.httpPathPrefix ?? '',
    pathEqual: flags.httpPathEqual ?? '',
    pathRegex: flags.httpPathRegex ?? '',
  };
  return isPersonal(filter) ? filter : undefined;
}
