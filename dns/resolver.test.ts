import * as dgram from 'node:dgram';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor, within } from '../command/wait.js';
import { createLogger } from '../logging/logger.js';
import { parseCidr } from '../netaddr/parse.js';
import { startZoneServer } from '../testbed/zone-server.js';
import { lookupInCluster } from './cluster-lookup.js';
import { type ClusterAnswer, DnsResolver } from './resolver.js';
import { buildQuery, decodeMessage, flags, RCODE, recordAddress, TYPE } from './wire.js';

const log = createLogger('test');

// The cluster's DNS and the workstation's original resolver: real DNS servers on loopback.
const clusterZone = {
  'echo.default.svc.cluster.local.': { A: ['10.96.0.10'] },
  'db.team.svc.cluster.local.': { A: ['10.96.0.11'], AAAA: ['fd00:96::11'], TXT: ['hello'] },
};
const outsideZone = { 'outside.example.': { A: ['192.0.2.7'] }, 'printer.': { A: ['192.0.2.9'] } };

async function setup() {
  const clusterDns = await startZoneServer('127.0.0.1', 0, clusterZone);
  const original = await startZoneServer('127.0.0.1', 0, outsideZone);
  const asked: string[] = [];
  const clusterLookup = (fqdn: string, qtype: number) =>
    lookupInCluster(fqdn, qtype, [{ address: '127.0.0.1', port: clusterDns.port }]);
  const resolver = new DnsResolver({
    listen: [],
    scope: () => ({
      clusterDomain: 'cluster.local',
      namespace: 'default',
      namespaces: ['default', 'team'],
      subnets: [parseCidr('10.96.0.0/12')],
    }),
    // The manager's side of LookupDNS, called directly (the gRPC hop is covered by the netns test).
    cluster: {
      lookup: async (fqdn, qtype): Promise<ClusterAnswer> => {
        asked.push(`${qtype} ${fqdn}`);
        return clusterLookup(fqdn, qtype);
      },
    },
    upstream: () => [{ address: '127.0.0.1', port: original.port }],
    log,
  });
  return {
    resolver,
    asked,
    original,
    clusterLookup,
    close: () => {
      clusterDns.close();
      original.close();
      resolver.stop();
    },
  };
}

async function ask(r: DnsResolver, name: string, type: number = TYPE.A, transport: 'udp' | 'tcp' = 'udp') {
  const m = decodeMessage((await r.answer(buildQuery(4242, name, type), transport))!);
  assert.is(m.id, 4242);
  return {
    rcode: flags.rcode(m.flags),
    ips: m.answers.map(recordAddress),
    names: m.answers.map((a) => a.name),
    m,
  };
}

test('cluster names resolve through the cluster, in every short form, answered under the asked name', async () => {
  const s = await setup();
  try {
    for (const name of ['echo.', 'echo.default.', 'echo.default.svc.', 'echo.default.svc.cluster.local.']) {
      const a = await ask(s.resolver, name);
      assert.equal([a.rcode, a.ips, a.names], [RCODE.NOERROR, ['10.96.0.10'], [name]], name);
    }
    const v6 = await ask(s.resolver, 'db.team.', TYPE.AAAA, 'tcp');
    assert.equal(v6.ips, ['fd00:96::11']);
    const none = await ask(s.resolver, 'echo.', TYPE.AAAA);
    assert.equal([none.rcode, none.ips], [RCODE.NOERROR, []], 'no AAAA: NOERROR without records');
    const txt = await ask(s.resolver, 'db.team.', TYPE.TXT);
    assert.is(txt.m.answers[0]?.data.toString('latin1', 1), 'hello');
    assert.is(txt.names[0], 'db.team.');
    const missing = await ask(s.resolver, 'nope.team.');
    assert.is(missing.rcode, RCODE.NXDOMAIN);
  } finally {
    s.close();
  }
});

test('answers are cached briefly: a burst costs one lookup', async () => {
  const s = await setup();
  try {
    await Promise.all(Array.from({ length: 20 }, () => ask(s.resolver, 'echo.default.')));
    await ask(s.resolver, 'echo.default.svc.cluster.local.');
    assert.equal(s.asked, ['1 echo.default.svc.cluster.local.']);
  } finally {
    s.close();
  }
});

test('other names, and single labels the cluster does not know, go to the original resolver', async () => {
  const s = await setup();
  try {
    const out = await ask(s.resolver, 'outside.example.');
    assert.equal([out.rcode, out.ips], [RCODE.NOERROR, ['192.0.2.7']]);
    const printer = await ask(s.resolver, 'printer.', TYPE.A, 'tcp');
    assert.equal(printer.ips, ['192.0.2.9']);
    assert.equal(s.original.seen, ['A outside.example.', 'A printer.']);
    const gone = await ask(s.resolver, 'nothing.example.');
    assert.is(gone.rcode, RCODE.NXDOMAIN);
  } finally {
    s.close();
  }
});

test('the manager unavailable: a name asked before keeps resolving from its expired answer (serve-stale), a new one fails', async () => {
  const s = await setup();
  let down: 'no' | 'manager' | 'cluster dns' | 'hanging' = 'no';
  let answerHanging: () => void = () => {};
  const resolver = new DnsResolver({
    listen: [],
    scope: () => ({ clusterDomain: 'cluster.local', namespace: 'default', namespaces: [], subnets: [] }),
    cluster: {
      lookup: (fqdn, qtype) =>
        down === 'manager'
          ? Promise.reject(new Error('manager unavailable'))
          : down === 'hanging'
            ? // The manager does not answer yet (a call waiting for its connection).
              new Promise<ClusterAnswer>((r) => {
                answerHanging = () => void s.clusterLookup(fqdn, qtype).then(r);
              })
            : down === 'cluster dns'
              ? // The manager answers, but no DNS server in the cluster did (manager/service.ts LookupDNS).
                Promise.resolve({ rcode: RCODE.SERVFAIL, ips: [], ttlSeconds: 5, raw: Buffer.alloc(0) })
              : s.clusterLookup(fqdn, qtype),
    },
    upstream: () => [],
    log,
    // Answers expire at once and stay usable for 300 ms when the cluster cannot be asked.
    maxTtlMs: 1,
    staleMs: 300,
    staleAfterMs: 50,
  });
  try {
    assert.equal((await ask(resolver, 'echo.')).ips, ['10.96.0.10']);
    await new Promise((r) => setTimeout(r, 20));
    down = 'manager';
    const stale = await ask(resolver, 'echo.');
    assert.equal([stale.rcode, stale.ips], [RCODE.NOERROR, ['10.96.0.10']], 'the expired answer');
    assert.is(stale.m.answers[0]?.ttl, 5, 'with a short TTL');
    assert.is(resolver.stats.staleAnswers, 1);
    down = 'cluster dns';
    const servfail = await ask(resolver, 'echo.');
    assert.equal(
      [servfail.rcode, servfail.ips],
      [RCODE.NOERROR, ['10.96.0.10']],
      "the cluster's DNS failing: the expired answer too",
    );
    // A lookup that hangs: the expired answer after staleAfterMs, while the lookup goes on.
    down = 'hanging';
    const waited = await ask(resolver, 'echo.');
    assert.equal(
      [waited.rcode, waited.ips],
      [RCODE.NOERROR, ['10.96.0.10']],
      'no answer yet: the expired one',
    );
    assert.is(resolver.stats.staleAnswers, 3);
    answerHanging();
    down = 'manager';
    assert.is((await ask(resolver, 'db.team.')).rcode, RCODE.SERVFAIL, 'never asked: nothing to give');
    await new Promise((r) => setTimeout(r, 400));
    assert.is((await ask(resolver, 'echo.')).rcode, RCODE.SERVFAIL, 'past the stale window');
    down = 'no';
    assert.equal((await ask(resolver, 'echo.')).ips, ['10.96.0.10'], 'asked again once the cluster answers');
  } finally {
    resolver.stop();
    s.close();
  }
});

test('once a refresh failed, the expired answer comes at once while the cluster is asked again behind it', async () => {
  const s = await setup();
  let mode: 'up' | 'failing' | 'hanging' = 'up';
  let lookups = 0;
  let release: () => void = () => {};
  const resolver = new DnsResolver({
    listen: [],
    scope: () => ({ clusterDomain: 'cluster.local', namespace: 'default', namespaces: [], subnets: [] }),
    cluster: {
      lookup: (fqdn, qtype) => {
        lookups++;
        if (mode === 'failing') return Promise.reject(new Error('manager unavailable'));
        if (mode === 'up') return s.clusterLookup(fqdn, qtype);
        // The manager does not answer yet (its port-forward being made again).
        return new Promise<ClusterAnswer>((r) => {
          release = () => void s.clusterLookup(fqdn, qtype).then(r);
        });
      },
    },
    upstream: () => [],
    log,
    maxTtlMs: 300,
    // A client response timer far longer than the test waits: only the failure recheck answers in time.
    staleAfterMs: 60_000,
  });
  const answeredWithin = (ms: number) => within(ask(resolver, 'echo.'), ms).then((a) => a ?? 'no answer');
  try {
    assert.equal((await ask(resolver, 'echo.')).ips, ['10.96.0.10']);
    await new Promise((r) => setTimeout(r, 350));
    mode = 'failing';
    const failed = await ask(resolver, 'echo.');
    assert.equal(failed.ips, ['10.96.0.10'], 'the refresh failed: the expired answer');
    mode = 'hanging';
    const before = lookups;
    const stale = await answeredWithin(5_000);
    assert.ok(stale !== 'no answer', 'answered without waiting for the hanging lookup');
    assert.equal(stale.ips, ['10.96.0.10']);
    assert.is(stale.m.answers[0]?.ttl, 5, 'as a stale answer, with its short TTL');
    assert.is(lookups, before + 1, 'the cluster asked again behind it');
    // Its answer refreshes the name: the next query gets it fresh, with no lookup of its own.
    release();
    const fresh = await waitFor('the name refreshed by the lookup behind it', async () => {
      const a = await ask(resolver, 'echo.');
      return a.m.answers[0]?.ttl !== 5 ? a : undefined;
    });
    assert.equal(fresh.ips, ['10.96.0.10']);
    assert.is(lookups, before + 1, 'no lookup after the one behind the stale answers');
  } finally {
    resolver.stop();
    s.close();
  }
});

test('an answer that comes after stop() (a lookup waiting for the manager) is dropped, not a crash', async () => {
  // A free port for both transports.
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r));
  const port = probe.address().port;
  probe.close();
  let answerLookup: (a: ClusterAnswer) => void = () => {};
  let asking: () => void = () => {};
  const asked = new Promise<void>((r) => {
    asking = r;
  });
  const resolver = new DnsResolver({
    listen: [{ address: '127.0.0.1', port }],
    scope: () => ({ clusterDomain: 'cluster.local', namespace: 'default', namespaces: [], subnets: [] }),
    cluster: {
      lookup: () =>
        new Promise<ClusterAnswer>((r) => {
          answerLookup = r;
          asking();
        }),
    },
    upstream: () => [],
    log,
  });
  await resolver.start();
  const client = dgram.createSocket('udp4');
  client.send(buildQuery(7, 'echo.', TYPE.A), port, '127.0.0.1');
  await asked;
  resolver.stop();
  client.close();
  answerLookup({ rcode: RCODE.NOERROR, ips: ['10.96.0.10'], ttlSeconds: 5, raw: Buffer.alloc(0) });
  // An uncaught ERR_SOCKET_DGRAM_NOT_RUNNING would end the run here.
  await new Promise((r) => setTimeout(r, 50));
  assert.is(resolver.stats.clusterQueries, 1);
});

test('a dead upstream or cluster gives SERVFAIL, garbage gives FORMERR or nothing', async () => {
  const s = await setup();
  try {
    const dead = new DnsResolver({
      listen: [],
      scope: () => ({ clusterDomain: 'cluster.local', namespace: 'default', namespaces: [], subnets: [] }),
      cluster: { lookup: () => Promise.reject(new Error('manager unavailable')) },
      upstream: () => [{ address: '127.0.0.1', port: 9 }],
      log,
    });
    assert.is((await ask(dead, 'echo.')).rcode, RCODE.SERVFAIL);
    assert.is((await ask(dead, 'x.example.')).rcode, RCODE.SERVFAIL);
    const garbage = Buffer.from([0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0]);
    const r = decodeMessage((await s.resolver.answer(garbage, 'udp'))!);
    assert.equal([r.id, flags.rcode(r.flags)], [0xabcd, RCODE.FORMERR]);
    assert.is(await s.resolver.answer(Buffer.from([1, 2, 3]), 'udp'), undefined);
  } finally {
    s.close();
  }
});

test.run();
