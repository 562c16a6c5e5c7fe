import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCidr, UsageError } from '../netaddr/parse.js';
import { CommandError, type IpCommands } from './ip-command.js';
import { parseIpRoutes, planRoutes, type RoutePlanInput, RouteTable, removeTpRouting } from './routes.js';

// `ip -j -4 route show table all` of a namespace with a veth, a default route and a VPN-ish /16.
const existing = parseIpRoutes(
  JSON.stringify([
    { type: 'throw', dst: '10.60.0.0/16', table: '7470', flags: [] },
    { dst: 'default', gateway: '10.9.0.2', dev: 'eth0', flags: [] },
    { dst: '0.0.0.0/1', gateway: '10.8.0.1', dev: 'tun9', flags: [] },
    { dst: '10.9.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '10.9.0.1', flags: [] },
    { dst: '10.100.0.0/16', gateway: '10.9.0.2', dev: 'eth0', flags: [] },
    { dst: '198.18.0.0/28', dev: 'tp0', protocol: 'kernel', flags: [] },
    { type: 'local', dst: '10.9.0.1', dev: 'eth0', table: 'local', flags: [] },
  ]),
  4,
);

function input(over: Partial<RoutePlanInput> = {}): RoutePlanInput {
  return {
    vifName: 'tp0',
    clusterSubnets: [
      { cidr: parseCidr('10.244.0.0/16'), source: 'pod subnet' },
      { cidr: parseCidr('10.96.0.0/12'), source: 'service subnet' },
    ],
    alsoProxy: [],
    neverProxy: [],
    keepOut: [],
    existing,
    allowConflicts: false,
    ...over,
  };
}

test('parses ip -j route output, host routes included', () => {
  assert.equal(
    existing.map((r) => `${r.type} ${r.dst.text} ${r.dev ?? '-'} ${r.table}`),
    [
      'throw 10.60.0.0/16 - 7470',
      'unicast 0.0.0.0/1 tun9 main',
      'unicast 10.9.0.0/24 eth0 main',
      'unicast 10.100.0.0/16 eth0 main',
      'unicast 198.18.0.0/28 tp0 main',
      'local 10.9.0.1/32 eth0 local',
    ],
  );
});

test('a cluster subnet that overlaps a route is refused with a message naming both', () => {
  const run = () => planRoutes(input());
  assert.throws(run, (e: unknown) => e instanceof UsageError);
  assert.throws(
    run,
    /the cluster's service subnet 10\.96\.0\.0\/12 overlaps the route 10\.100\.0\.0\/16 via 10\.9\.0\.2 dev eth0.*--never-proxy.*--allow-conflicting-subnets/,
  );
});

test('--never-proxy of the overlap, or --allow-conflicting-subnets, lets it through', () => {
  const kept = planRoutes(input({ neverProxy: [parseCidr('10.100.0.0/16')] }));
  assert.equal(
    kept.routes.map((c) => c.text),
    ['10.244.0.0/16', '10.96.0.0/12'],
  );
  assert.equal(
    kept.throws.map((c) => c.text),
    ['10.100.0.0/16'],
  );
  const allowed = planRoutes(input({ allowConflicts: true }));
  assert.equal(allowed.throws, []);
  assert.is(allowed.conflicts.length, 1);
});

test('the manager and the forwarded resolvers keep their path; --also-proxy is added without a check', () => {
  const plan = planRoutes(
    input({
      clusterSubnets: [{ cidr: parseCidr('10.244.0.0/16'), source: 'pod subnet' }],
      alsoProxy: [parseCidr('10.9.0.128/25'), parseCidr('10.244.0.0/16')],
      keepOut: ['10.244.0.2', '192.0.2.1', '10.9.0.200'],
      neverProxy: [parseCidr('172.16.0.0/12')],
    }),
  );
  assert.equal(
    plan.routes.map((c) => c.text),
    ['10.244.0.0/16', '10.9.0.128/25'],
  );
  // 192.0.2.1 and 172.16.0.0/12 are routed elsewhere anyway: no throw needed.
  assert.equal(
    plan.throws.map((c) => c.text),
    ['10.244.0.2/32', '10.9.0.200/32'],
  );
});

test('a subnet entirely --never-proxy is not routed at all', () => {
  const plan = planRoutes(
    input({ neverProxy: [parseCidr('10.64.0.0/10')], existing: [], clusterSubnets: input().clusterSubnets }),
  );
  assert.equal(
    plan.routes.map((c) => c.text),
    ['10.244.0.0/16'],
  );
});

function recorder(failing: RegExp[] = []): IpCommands & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    ip: async (args) => {
      const line = `ip ${args.join(' ')}`;
      log.push(line);
      if (failing.some((f) => f.test(line)))
        throw new CommandError(['ip', ...args], {
          code: 2,
          stdout: '',
          stderr: 'RTNETLINK answers: No such file',
        });
      return '';
    },
  };
}

test('the route table is applied, updated by difference and removed', async () => {
  const run = recorder([/rule del/]);
  const table = new RouteTable(run, 'tp0', { 4: '198.18.0.1' });
  await table.apply(planRoutes(input({ neverProxy: [parseCidr('10.100.0.0/16')], keepOut: ['10.244.0.2'] })));
  assert.equal(run.log, [
    'ip -4 rule add pref 7470 lookup 7470',
    'ip -4 route replace throw 10.100.0.0/16 table 7470',
    'ip -4 route replace throw 10.244.0.2/32 table 7470',
    'ip -4 route replace 10.244.0.0/16 dev tp0 src 198.18.0.1 table 7470',
    'ip -4 route replace 10.96.0.0/12 dev tp0 src 198.18.0.1 table 7470',
  ]);
  run.log.length = 0;
  await table.apply(
    planRoutes(
      input({
        clusterSubnets: [{ cidr: parseCidr('10.244.0.0/16'), source: 'pod subnet' }],
        keepOut: ['10.244.0.2'],
        alsoProxy: [parseCidr('10.0.5.0/24')],
      }),
    ),
  );
  assert.equal(run.log, [
    'ip -4 route replace 10.0.5.0/24 dev tp0 src 198.18.0.1 table 7470',
    'ip -4 route del 10.96.0.0/12 dev tp0 table 7470',
    'ip -4 route del throw 10.100.0.0/16 table 7470',
  ]);
  run.log.length = 0;
  await removeTpRouting(run);
  assert.equal(run.log, [
    'ip -4 rule del pref 7470',
    'ip -4 route show table 7470',
    'ip -6 rule del pref 7470',
    'ip -6 route show table 7470',
  ]);
});

test.run();
