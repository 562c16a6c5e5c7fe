// The --port flag of tp intercept: LOCAL[:REMOTE], where REMOTE is a port number or a port name (a
// container port's or a Service port's; the manager resolves it). Numbers go through the one port parser.
// And the personal intercept's --http-* flags.
import { isPersonal, parseHeaderFlag } from '../http-filter/filter.js';
import { parsePort, UsageError } from '../netaddr/parse.js';
import type { HttpFilter } from '../rpc/gen/manager.js';

/** A port name as Kubernetes allows it (IANA_SVC_NAME: 1–15 lowercase letters, digits, inner dashes). */
const PORT_NAME = /^(?=.{1,15}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** The local port, and the workload's port by number (0: none given) or by name (''). */
export function parseInterceptPort(value: string): { local: number; remote: number; remoteName: string } {
  const parts = value.split(':');
  if (parts.length > 2 || parts[0] === '')
    throw new UsageError(
      `invalid --port "${value}": expected LOCAL[:REMOTE], e.g. 8080, 18090:8080 or 18090:http`,
    );
  const local = parsePort(parts[0]!, 'local port');
  if (parts.length === 1) return { local, remote: 0, remoteName: '' };
  const remote = parts[1]!;
  if (/^\d+$/.test(remote)) return { local, remote: parsePort(remote, 'remote port'), remoteName: '' };
  if (!PORT_NAME.test(remote) || !/[a-z]/.test(remote))
    throw new UsageError(
      `invalid --port "${value}": REMOTE must be a port number or a port name (lowercase letters, digits and dashes, at most 15), e.g. 18090:http`,
    );
  return { local, remote: 0, remoteName: remote };
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
