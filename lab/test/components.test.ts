// The lab's command lines and rendered configuration: the flags the issue requires are present, the
// processes enter the right namespace, and the root namespace gets only the API forward.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { objectPath } from '../api.js';
import {
  COMPONENT_ORDER,
  componentSpec,
  type LabLayout,
  launchArgv,
  renderKubeProxyConfig,
} from '../components.js';
import { corednsObjects, renderCorefile } from '../coredns.js';
import { renderKubeconfig } from '../kubeconfig.js';
import { labPaths } from '../paths.js';

const layout: LabLayout = {
  bin: '/cache/bin',
  paths: labPaths('/state'),
  labMain: '/repo/dist/lab/main.js',
  nodeAgentMain: '/repo/dist/lab/node/main.js',
  hostApiPort: 16443,
};
const argvOf = (name: Parameters<typeof componentSpec>[0]) => componentSpec(name, layout).argv;

test('only the API forward runs in the root namespace; the rest enter tplab-node', () => {
  for (const name of COMPONENT_ORDER) {
    const spec = componentSpec(name, layout);
    if (name === 'api-forward') {
      assert.is(spec.netns, null);
      assert.equal(launchArgv(spec), spec.argv);
    } else {
      assert.is(spec.netns, 'tplab-node', name);
      // nsenter, not `ip netns exec`: the mount namespace must stay shared (pod netns mounts).
      assert.equal(launchArgv(spec).slice(0, 3), ['nsenter', '--net=/run/netns/tplab-node', '--']);
    }
  }
});

test('the API forward listens on loopback only and reaches the relay through its unix socket', () => {
  assert.equal(argvOf('api-forward').slice(2), [
    'relay',
    '--listen=tcp:127.0.0.1:16443',
    '--connect=unix:/state/run/apiserver.sock',
  ]);
  assert.equal(argvOf('api-relay').slice(2), [
    'relay',
    '--listen=unix:/state/run/apiserver.sock',
    '--connect=tcp:127.0.0.1:6443',
  ]);
});

test('kube-apiserver: RBAC, webhooks, service range, kubelet client cert and InternalIP', () => {
  const argv = argvOf('kube-apiserver');
  for (const flag of [
    '--authorization-mode=Node,RBAC',
    '--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook',
    '--service-cluster-ip-range=10.96.0.0/16',
    '--kubelet-preferred-address-types=InternalIP',
    '--advertise-address=172.30.0.1',
    '--kubelet-client-certificate=/state/pki/apiserver-kubelet-client.crt',
    '--kubelet-certificate-authority=/state/pki/ca.crt',
    '--service-account-signing-key-file=/state/pki/sa.key',
    '--etcd-servers=http://127.0.0.1:2379',
  ]) {
    assert.ok(argv.includes(flag), `missing ${flag}`);
  }
});

test('controller-manager: node CIDRs, all controllers, service-account keys and root CA', () => {
  const argv = argvOf('kube-controller-manager');
  for (const flag of [
    '--allocate-node-cidrs=true',
    '--cluster-cidr=10.244.0.0/16',
    '--node-cidr-mask-size=24',
    '--controllers=*',
    '--service-account-private-key-file=/state/pki/sa.key',
    '--root-ca-file=/state/pki/ca.crt',
    '--use-service-account-credentials=true',
  ]) {
    assert.ok(argv.includes(flag), `missing ${flag}`);
  }
});

test('node agent: the agreed flags', () => {
  const argv = argvOf('node-agent');
  assert.is(argv[0], process.execPath);
  for (const flag of [
    '--kubeconfig=/state/kubeconfig-node',
    '--node-name=tplab-node',
    '--node-ip=172.30.0.1',
    '--state-dir=/state/node',
    '--tls-cert=/state/pki/node-serving.crt',
    '--tls-key=/state/pki/node-serving.key',
    '--cluster-dns=10.96.0.10',
    '--cluster-domain=cluster.local',
    '--ca-file=/state/pki/ca.crt',
  ]) {
    assert.ok(argv.includes(flag), `missing ${flag}`);
  }
});

test('kube-proxy: iptables mode, the node IP, conntrack sysctls left alone', () => {
  const config = parse(renderKubeProxyConfig(layout));
  assert.is(config.kind, 'KubeProxyConfiguration');
  assert.is(config.mode, 'iptables');
  assert.is(config.hostnameOverride, 'tplab-node');
  assert.is(config.bindAddress, '172.30.0.1');
  assert.is(config.clusterCIDR, '10.244.0.0/16');
  assert.is(config.conntrack.maxPerCore, 0);
  assert.is(config.conntrack.min, 0);
  assert.is(config.clientConnection.kubeconfig, '/state/config/kube-proxy.kubeconfig');
});

test('CoreDNS: Deployment of lab/coredns, kube-dns at 10.96.0.10, no upstream forwarding', () => {
  const objects = corednsObjects();
  const svc = objects.find((o) => o.kind === 'Service') as { spec: { clusterIP: string } } | undefined;
  assert.is(svc?.spec.clusterIP, '10.96.0.10');
  const deploy = objects.find((o) => o.kind === 'Deployment') as
    | { spec: { template: { spec: { containers: { image: string }[] } } } }
    | undefined;
  assert.is(deploy?.spec.template.spec.containers[0]?.image, 'lab/coredns');
  const corefile = renderCorefile();
  assert.match(corefile, /kubernetes cluster\.local in-addr\.arpa ip6\.arpa/);
  assert.not.match(corefile, /forward/);
  assert.equal(
    objects.map((o) => objectPath(o)),
    [
      '/api/v1/namespaces/kube-system/serviceaccounts/coredns',
      '/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Acoredns',
      '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system%3Acoredns',
      '/api/v1/namespaces/kube-system/configmaps/coredns',
      '/apis/apps/v1/namespaces/kube-system/deployments/coredns',
      '/api/v1/namespaces/kube-system/services/kube-dns',
    ],
  );
});

test('kubeconfig: server, embedded CA and client credentials, current context', () => {
  const k = parse(
    renderKubeconfig({
      server: 'https://127.0.0.1:16443',
      caPem: 'CA',
      clientCertPem: 'CERT',
      clientKeyPem: 'KEY',
      user: 'tp-lab-admin',
    }),
  );
  assert.is(k['current-context'], 'tp-lab');
  assert.is(k.clusters[0].cluster.server, 'https://127.0.0.1:16443');
  assert.is(Buffer.from(k.clusters[0].cluster['certificate-authority-data'], 'base64').toString(), 'CA');
  assert.is(Buffer.from(k.users[0].user['client-key-data'], 'base64').toString(), 'KEY');
});

test.run();
