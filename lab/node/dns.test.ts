import type { V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { podHostname, podResolvConf, renderHosts, renderResolvConf } from './dns.js';

const cluster = { servers: ['10.96.0.10'], domain: 'cluster.local' };
const host = 'nameserver 10.255.255.53\nsearch corp.example\noptions edns0\n';
const pod = (spec: Partial<NonNullable<V1Pod['spec']>> = {}): V1Pod => ({
  metadata: { name: 'web-7d9f', namespace: 'shop' },
  spec: { containers: [], ...spec },
});

test('ClusterFirst: cluster DNS, the namespace search path, ndots:5', () => {
  assert.is(
    renderResolvConf(podResolvConf(pod(), cluster, host)),
    'search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n',
  );
});

test('Default and host network use the host file; ClusterFirstWithHostNet opts back in', () => {
  assert.equal(podResolvConf(pod({ dnsPolicy: 'Default' }), cluster, host).nameservers, ['10.255.255.53']);
  assert.equal(podResolvConf(pod({ hostNetwork: true }), cluster, host).nameservers, ['10.255.255.53']);
  assert.equal(
    podResolvConf(pod({ hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' }), cluster, host)
      .nameservers,
    ['10.96.0.10'],
  );
});

test('dnsConfig adds servers and searches and overrides options by name; None uses only dnsConfig', () => {
  const conf = podResolvConf(
    pod({
      dnsConfig: {
        nameservers: ['1.1.1.1'],
        searches: ['extra.local'],
        options: [{ name: 'ndots', value: '2' }, { name: 'rotate' }],
      },
    }),
    cluster,
    host,
  );
  assert.equal(conf.nameservers, ['10.96.0.10', '1.1.1.1']);
  assert.ok(conf.searches.includes('extra.local'));
  assert.equal(conf.options, ['ndots:2', 'rotate']);
  const none = podResolvConf(
    pod({ dnsPolicy: 'None', dnsConfig: { nameservers: ['9.9.9.9'] } }),
    cluster,
    host,
  );
  assert.equal(none, { nameservers: ['9.9.9.9'], searches: [], options: [] });
});

test('hosts: localhost entries, the pod IP with its hostname (and subdomain FQDN), host aliases', () => {
  const text = renderHosts(
    pod({
      hostname: 'db-0',
      subdomain: 'db',
      hostAliases: [{ ip: '10.1.1.1', hostnames: ['a.example', 'b.example'] }],
    }),
    '10.244.0.9',
    'cluster.local',
  );
  assert.match(text, /^127\.0\.0\.1\tlocalhost$/m);
  assert.match(text, /^10\.244\.0\.9\tdb-0\.db\.shop\.svc\.cluster\.local\tdb-0$/m);
  assert.match(text, /^10\.1\.1\.1\ta\.example\tb\.example$/m);
  assert.match(renderHosts(pod(), '10.244.0.3', 'cluster.local'), /^10\.244\.0\.3\tweb-7d9f$/m);
  assert.is(podHostname({ metadata: { name: `${'a'.repeat(62)}-b` } }), 'a'.repeat(62));
});

test.run();
