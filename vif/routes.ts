// Routing of cluster subnets into the VIF. All of tp's routes live in one routing table, consulted by one
// policy rule ahead of the main table:
//   ip rule add pref 7470 lookup 7470
//   ip route replace 10.96.0.0/12 dev tp0 table 7470          (pod and service subnets, --also-proxy)
//   ip route replace throw 10.96.5.0/24 table 7470            (--never-proxy, the manager's address)
// A `throw` ends the lookup in tp's table and the kernel continues with the main table: the address keeps
// the path it had before tp. Removing everything is a table flush and one rule delete, which is also what
// clears the leftovers of a daemon that was killed.
import { type Cidr, cidrContains, cidrsOverlap, parseCidr, UsageError } from '../netaddr/parse.js';
import { CommandError, type IpCommands } from './ip-command.js';

export const TP_ROUTE_TABLE = 7470;
export const TP_RULE_PRIORITY = 7470;

export interface ExistingRoute {
  /** The destination as a normalized CIDR. */
  dst: Cidr;
  dev: string | undefined;
  gateway: string | undefined;
  table: string;
  type: string;
}

/** Parses `ip -j route show table all`; skips entries this module does not need to know about. */
export function parseIpRoutes(json: string, family: 4 | 6): ExistingRoute[] {
  const rows = JSON.parse(json || '[]') as Array<Record<string, unknown>>;
  const out: ExistingRoute[] = [];
  for (const r of rows) {
    const dst = String(r.dst ?? '');
    if (dst === '' || dst === 'default') continue;
    let cidr: Cidr;
    try {
      cidr = parseCidr(dst.includes('/') ? dst : `${dst}/${family === 4 ? 32 : 128}`);
    } catch {
      continue;
    }
    out.push({
      dst: cidr,
      dev: typeof r.dev === 'string' ? r.dev : undefined,
      gateway: typeof r.gateway === 'string' ? r.gateway : undefined,
      table: typeof r.table === 'string' ? r.table : 'main',
      type: typeof r.type === 'string' ? r.type : 'unicast',
    });
  }
  return out;
}

export function describeRoute(r: ExistingRoute): string {
  let s = r.type === 'unicast' ? r.dst.text : `${r.type} ${r.dst.text}`;
  if (r.gateway) s += ` via ${r.gateway}`;
  if (r.dev) s += ` dev ${r.dev}`;
  if (r.table !== 'main') s += ` table ${r.table}`;
  return s;
}

export interface ProxiedSubnet {
  cidr: Cidr;
  /** What it is, for messages: "pod subnet", "service subnet", "--also-proxy". */
  source: string;
}

export interface RoutePlanInput {
  vifName: string;
  /** Subnets the manager reports; they are checked against the namespace's routes. */
  clusterSubnets: ProxiedSubnet[];
  /** The user asked for these explicitly: they win over existing routes without a check. */
  alsoProxy: Cidr[];
  neverProxy: Cidr[];
  /** Addresses that must keep their current path: the manager, the resolvers DNS is forwarded to. */
  keepOut: string[];
  existing: ExistingRoute[];
  allowConflicts: boolean;
}

export interface RoutePlan {
  /** Routed into the VIF. */
  routes: Cidr[];
  /** Thrown back to the main table. */
  throws: Cidr[];
  /** Overlaps that were allowed (--allow-conflicting-subnets), for the log and the status. */
  conflicts: string[];
}

function covers(outer: Cidr, inner: Cidr): boolean {
  return outer.family === inner.family && outer.prefix <= inner.prefix && cidrContains(outer, inner.address);
}

/**
 * Decides the routes. A cluster subnet that overlaps a route of the namespace (other than default
 * routes and tp's own) is refused with a message naming both, unless the overlap is --never-proxy'd or
 * conflicts are allowed.
 */
export function planRoutes(input: RoutePlanInput): RoutePlan {
  const candidates: ProxiedSubnet[] = [
    ...input.clusterSubnets,
    ...input.alsoProxy.map((cidr) => ({ cidr, source: '--also-proxy' })),
  ];
  const relevant = input.existing.filter(
    (r) =>
      r.type === 'unicast' &&
      r.table !== 'local' &&
      r.table !== String(TP_ROUTE_TABLE) &&
      r.dev !== input.vifName &&
      // 0.0.0.0/1 + 128.0.0.0/1 is how VPNs override the default route: it is a default route.
      r.dst.prefix > 1,
  );
  const conflicts: string[] = [];
  for (const { cidr, source } of input.clusterSubnets) {
    for (const r of relevant) {
      if (!cidrsOverlap(cidr, r.dst)) continue;
      const overlap = cidr.prefix >= r.dst.prefix ? cidr : r.dst;
      if (input.neverProxy.some((n) => covers(n, overlap))) continue;
      conflicts.push(`the cluster's ${source} ${cidr.text} overlaps the route ${describeRoute(r)}`);
    }
  }
  if (conflicts.length > 0 && !input.allowConflicts) {
    throw new UsageError(
      `${conflicts.join('; ')}: tp would take that traffic away from it. ` +
        'Keep the existing route with --never-proxy CIDR, or let tp route the subnet anyway with --allow-conflicting-subnets',
    );
  }
  const routes: Cidr[] = [];
  for (const { cidr } of candidates) {
    if (routes.some((r) => r.text === cidr.text)) continue;
    if (input.neverProxy.some((n) => covers(n, cidr))) continue;
    routes.push(cidr);
  }
  const throws: Cidr[] = [];
  const addThrow = (c: Cidr) => {
    if (throws.some((t) => covers(t, c))) return;
    if (!routes.some((r) => cidrsOverlap(r, c))) return;
    throws.push(c);
  };
  for (const n of input.neverProxy) addThrow(n);
  for (const ip of input.keepOut) addThrow(parseCidr(`${ip}/${ip.includes(':') ? 128 : 32}`));
  return { routes, throws, conflicts };
}

/** Applies and updates a plan in the current network namespace; removes everything tp routed. */
export class RouteTable {
  private applied: RoutePlan = { routes: [], throws: [], conflicts: [] };
  private rules = new Set<4 | 6>();

  constructor(
    private readonly run: IpCommands,
    private readonly vifName: string,
    /** The VIF's own address per family: the source the kernel picks for routed traffic. */
    private readonly sourceAddress: { 4?: string; 6?: string },
  ) {}

  get current(): RoutePlan {
    return this.applied;
  }

  /** Makes tp's table match the plan: adds what is new, deletes what went away. */
  async apply(plan: RoutePlan): Promise<void> {
    for (const family of [4, 6] as const) {
      const needed = [...plan.routes, ...plan.throws].some((c) => c.family === family);
      if (needed && !this.rules.has(family)) {
        await this.run.ip([
          `-${family}`,
          'rule',
          'add',
          'pref',
          String(TP_RULE_PRIORITY),
          'lookup',
          String(TP_ROUTE_TABLE),
        ]);
        this.rules.add(family);
      }
    }
    const table = ['table', String(TP_ROUTE_TABLE)];
    for (const t of plan.throws)
      if (!this.applied.throws.some((a) => a.text === t.text))
        await this.run.ip([`-${t.family}`, 'route', 'replace', 'throw', t.text, ...table]);
    for (const r of plan.routes) {
      if (this.applied.routes.some((a) => a.text === r.text)) continue;
      const src = this.sourceAddress[r.family];
      await this.run.ip([
        `-${r.family}`,
        'route',
        'replace',
        r.text,
        'dev',
        this.vifName,
        ...(src ? ['src', src] : []),
        ...table,
      ]);
    }
    for (const r of this.applied.routes)
      if (!plan.routes.some((p) => p.text === r.text))
        await ignoreMissing(
          this.run.ip([`-${r.family}`, 'route', 'del', r.text, 'dev', this.vifName, ...table]),
        );
    for (const t of this.applied.throws)
      if (!plan.throws.some((p) => p.text === t.text))
        await ignoreMissing(this.run.ip([`-${t.family}`, 'route', 'del', 'throw', t.text, ...table]));
    this.applied = plan;
  }

  /** Removes tp's rule and table (what this process added, and what a killed daemon left behind). */
  async removeAll(): Promise<void> {
    await removeTpRouting(this.run);
    this.applied = { routes: [], throws: [], conflicts: [] };
    this.rules.clear();
  }
}

/** Deletes tp's policy rules and flushes its table, for both families; missing ones are fine. */
export async function removeTpRouting(run: IpCommands): Promise<boolean> {
  let removed = false;
  for (const family of ['-4', '-6']) {
    // A rule may have been added twice by a crashed daemon racing a new one: delete until none is left.
    for (let i = 0; i < 8; i++) {
      try {
        await run.ip([family, 'rule', 'del', 'pref', String(TP_RULE_PRIORITY)]);
        removed = true;
      } catch (e) {
        if (e instanceof CommandError) break;
        throw e;
      }
    }
    try {
      const before = await run.ip([family, 'route', 'show', 'table', String(TP_ROUTE_TABLE)]);
      if (before.trim() !== '') {
        await run.ip([family, 'route', 'flush', 'table', String(TP_ROUTE_TABLE)]);
        removed = true;
      }
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
    }
  }
  return removed;
}

/** The routes of the current network namespace, both families. */
export async function readRoutes(run: IpCommands): Promise<ExistingRoute[]> {
  const v4 = parseIpRoutes(await run.ip(['-j', '-4', 'route', 'show', 'table', 'all']), 4);
  let v6: ExistingRoute[] = [];
  try {
    v6 = parseIpRoutes(await run.ip(['-j', '-6', 'route', 'show', 'table', 'all']), 6);
  } catch (e) {
    // IPv6 disabled in this namespace: nothing to conflict with.
    if (!(e instanceof CommandError)) throw e;
  }
  return [...v4, ...v6];
}

async function ignoreMissing(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof CommandError)) throw e;
  }
}
