// The HTTP filter of a personal intercept, pure: what the CLI parses, the manager validates and compares,
// the agent matches each request against, and `tp list`/`tp describe` print. One file so that the
// manager's notion of "cannot match" and the agent's matching cannot drift apart.
import type { HttpFilter, InterceptSpec } from '../rpc/gen/manager.js';

/** The parts of a request a filter looks at: the path with its query, and header values by lowercase name. */
export interface RequestHead {
  /** The request target as sent (`/api/x?y=1`); an absolute form (`http://h/api`) is reduced to its path. */
  url: string;
  header: (lowercaseName: string) => string | string[] | undefined;
}

/** A filter is personal when it says anything at all; an empty or missing one takes every connection. */
export function isPersonal(filter: HttpFilter | undefined): filter is HttpFilter {
  return (
    filter !== undefined &&
    (filter.headers.length > 0 ||
      filter.pathPrefix !== '' ||
      filter.pathEqual !== '' ||
      filter.pathRegex !== '')
  );
}

export function isPersonalSpec(spec: InterceptSpec | undefined): boolean {
  return isPersonal(spec?.httpFilter);
}

/**
 * The manager's check: header names lowercased (HTTP/2 sends them lowercase, HTTP/1 compares them
 * case-insensitively), duplicates merged only when equal, at most one path form, a regex that compiles.
 * Returns the normalized filter or the message naming the problem and the fix.
 */
export function normalizeFilter(filter: HttpFilter): { filter: HttpFilter } | { error: string } {
  const headers: { name: string; value: string }[] = [];
  for (const h of filter.headers) {
    const name = h.name.trim().toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name))
      return {
        error: `--http-header "${h.name}": not a valid header name; use NAME=VALUE, e.g. x-dev=alice`,
      };
    if (name.startsWith(':'))
      return { error: `--http-header "${h.name}": pseudo-headers cannot be matched; use --http-path-*` };
    const same = headers.find((o) => o.name === name);
    if (same && same.value !== h.value)
      return {
        error: `--http-header ${name} is given twice with different values ("${same.value}", "${h.value}"): no request can match both`,
      };
    if (!same) headers.push({ name, value: h.value });
  }
  const paths = [filter.pathPrefix, filter.pathEqual, filter.pathRegex].filter((p) => p !== '');
  if (paths.length > 1)
    return { error: 'give at most one of --http-path-prefix, --http-path-equal and --http-path-regex' };
  for (const [flag, p] of [
    ['--http-path-prefix', filter.pathPrefix],
    ['--http-path-equal', filter.pathEqual],
  ] as const)
    if (p !== '' && !p.startsWith('/'))
      return { error: `${flag} "${p}": a path starts with "/": no request can match it` };
  if (filter.pathRegex !== '') {
    try {
      new RegExp(filter.pathRegex);
    } catch (e) {
      return {
        error: `--http-path-regex "${filter.pathRegex}" is not a valid regular expression (${(e as Error).message}): fix it and try again`,
      };
    }
  }
  headers.sort((a, b) => a.name.localeCompare(b.name) || a.value.localeCompare(b.value));
  return { filter: { ...filter, headers } };
}

/** Two normalized filters select the same requests as far as tp can tell: the manager refuses the second. */
export function sameFilter(a: HttpFilter, b: HttpFilter): boolean {
  return formatFilter(a) === formatFilter(b);
}

/** One line: `x-dev=alice,path-prefix=/api`; `all traffic` for a global intercept. */
export function formatFilter(filter: HttpFilter | undefined): string {
  if (!isPersonal(filter)) return 'all traffic';
  const parts = filter.headers.map((h) => `${h.name}=${h.value}`);
  if (filter.pathPrefix) parts.push(`path-prefix=${filter.pathPrefix}`);
  if (filter.pathEqual) parts.push(`path-equal=${filter.pathEqual}`);
  if (filter.pathRegex) parts.push(`path-regex=${filter.pathRegex}`);
  return parts.join(',');
}

/** A filter compiled once for the agent's per-request test. */
export interface CompiledFilter {
  matches(request: RequestHead): boolean;
}

export function compileFilter(filter: HttpFilter): CompiledFilter {
  const headers = filter.headers.map((h) => ({ name: h.name.toLowerCase(), value: h.value }));
  const regex = filter.pathRegex ? new RegExp(filter.pathRegex) : undefined;
  const { pathPrefix, pathEqual } = filter;
  const needsPath = regex !== undefined || pathPrefix !== '' || pathEqual !== '';
  return {
    matches(request) {
      for (const h of headers) {
        const v = request.header(h.name);
        // A header sent several times matches when one of its values does.
        if (Array.isArray(v) ? !v.includes(h.value) : v !== h.value) return false;
      }
      if (!needsPath) return true;
      const path = pathOf(request.url);
      if (pathEqual) return path === pathEqual;
      if (pathPrefix) return path.startsWith(pathPrefix);
      return regex!.test(path);
    },
  };
}

/** The path of a request target: the query cut off, an absolute form reduced to its path. */
export function pathOf(url: string): string {
  let u = url;
  if (!u.startsWith('/')) {
    const scheme = u.indexOf('://');
    if (scheme >= 0) {
      const slash = u.indexOf('/', scheme + 3);
      u = slash < 0 ? '/' : u.slice(slash);
    }
  }
  const q = u.search(/[?#]/);
  return q < 0 ? u : u.slice(0, q);
}

/** `NAME=VALUE` (also `NAME:VALUE`) from the command line. */
export function parseHeaderFlag(flag: string): { name: string; value: string } | { error: string } {
  const at = flag.search(/[=:]/);
  if (at <= 0)
    return { error: `--http-header "${flag}": expected NAME=VALUE, e.g. --http-header x-dev=alice` };
  return { name: flag.slice(0, at).trim(), value: flag.slice(at + 1).trim() };
}
