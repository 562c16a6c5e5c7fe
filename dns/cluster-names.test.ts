import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCidr } from '../netaddr/parse.js';
import { type ClusterDnsScope, clusterNameFor, reverseAddress } from './cluster-names.js';

const scope: ClusterDnsScope = {
  clusterDomain: 'cluster.local',
  namespace: 'default',
  namespaces: ['default', 'kube-system', 'Team-A'],
  subnets: [parseCidr('10.96.0.0/12'), parseCidr('fd00:10:96::/112')],
};

test('cluster names and the name the cluster knows them by', () => {
  const cases: Array<[string, string | undefined, boolean?]> = [
    ['echo', 'echo.default.svc.cluster.local.', true],
    ['ECHO.', 'echo.default.svc.cluster.local.', true],
    ['echo.default', 'echo.default.svc.cluster.local.'],
    ['echo.kube-system.', 'echo.kube-system.svc.cluster.local.'],
    ['echo.team-a', 'echo.team-a.svc.cluster.local.'],
    ['echo.other.svc', 'echo.other.svc.cluster.local.'],
    ['echo.default.svc.cluster.local.', 'echo.default.svc.cluster.local.'],
    ['10-244-1-5.default.pod.cluster.local', '10-244-1-5.default.pod.cluster.local.'],
    ['cluster.local', 'cluster.local.'],
    ['10.0.96.10.in-addr.arpa.', '10.0.96.10.in-addr.arpa.'],
  ];
  for (const [q, fqdn, fallThrough] of cases) {
    const got = clusterNameFor(q, scope);
    assert.is(got?.fqdn, fqdn, q);
    assert.is(got?.fallThrough, fallThrough ?? false, q);
  }
});

test('other names stay with the workstation resolvers', () => {
  for (const q of [
    'example.com',
    'echo.other',
    'www.example.com.',
    '.',
    '1.0.0.127.in-addr.arpa',
    'cluster.local.evil.com',
  ])
    assert.is(clusterNameFor(q, scope), undefined, q);
});

test('reverse names', () => {
  assert.is(reverseAddress('5.1.244.10.in-addr.arpa'), '10.244.1.5');
  assert.is(reverseAddress('300.1.244.10.in-addr.arpa'), undefined);
  const v6 = `${'a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f'}.ip6.arpa`;
  assert.is(reverseAddress(v6), 'fd00:0010:0096:0000:0000:0000:0000:000a');
  assert.is(clusterNameFor(`${v6}.`, scope)?.fqdn, `${v6}.`);
});

test.run();
