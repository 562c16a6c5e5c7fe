// Finding the cluster's network from what the API server and a pod can see.
import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  clusterDomainFromResolvConf,
  nameserversFromResolvConf,
  podSubnetsOfNodes,
  podSubnetsOfPods,
  serviceRangeFromError,
} from './cluster-info.js';

test('pod subnets: every node podCIDR once, dual-stack included, the old single field too', () => {
  const nodes: V1Node[] = [
    { spec: { podCIDRs: ['10.244.0.0/24', 'fd00:10:244::/64'] } },
    { spec: { podCIDR: '10.244.1.0/24' } },
    { spec: { podCIDRs: ['10.244.0.0/24'] } },
    { spec: {} },
  ];
  assert.equal(podSubnetsOfNodes(nodes), ['10.244.0.0/24', '10.244.1.0/24', 'fd00:10:244::/64']);
});

test('pod subnets from pod IPs when nodes carry none; host-network pods do not count', () => {
  const pods: V1Pod[] = [
    { status: { podIP: '192.168.3.7' } },
    { status: { podIPs: [{ ip: '192.168.9.1' }] } },
    { spec: { hostNetwork: true, containers: [] }, status: { podIP: '172.30.0.1' } },
  ];
  assert.equal(podSubnetsOfPods(pods), ['192.168.0.0/16']);
});

test('the service range in the API server refusal of an out-of-range ClusterIP', () => {
  const older =
    'Service "tp-service-cidr-probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12';
  assert.equal(serviceRangeFromError(older), ['10.96.0.0/12']);
  const dual = 'provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16, fd00:96::/108';
  assert.equal(serviceRangeFromError(dual), ['10.96.0.0/16', 'fd00:96::/108']);
  assert.equal(
    serviceRangeFromError(
      'spec.clusterIPs: Invalid value: the provided network does not match the current range',
    ),
    [],
  );
});

test('cluster domain and nameservers from a pod resolv.conf', () => {
  const text =
    'search tp-system.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n';
  assert.is(clusterDomainFromResolvConf(text), 'cluster.local');
  assert.equal(nameserversFromResolvConf(text), ['10.96.0.10']);
  assert.is(clusterDomainFromResolvConf('nameserver 1.1.1.1\n'), undefined);
});

test.run();
