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
import {
  bridgeMac,
  gatewayOf,
  renderCniConflist,
  renderContainerdConfig,
  renderKubeletConfig,
} from '../node-config.js';
import { cgroupHierarchies, mountsUnder } from '../node-runtime.js';
import { labPaths } from '../paths.js';

const layout: LabLayout = {
  bin: '/cache/bin',
  paths: labPaths('/state'),
  labMain: '/repo/dist/lab/main.js',
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
  // `node -- dist/lab/main.js relay …`: Node takes none of the relay's flags.
  assert.equal(argvOf('api-forward').slice(1), [
    '--',
    '/repo/dist/lab/main.js',
    'relay',
    '--listen=tcp:127.0.0.1:16443',
    '--connect=unix:/state/run/apiserver.sock',
  ]);
  assert.equal(argvOf('api-relay').slice(1), [
    '--',
    '/repo/dist/lab/main.js',
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

test("containerd: Debian's binary with the lab's config, in tplab-node", () => {
  assert.equal(argvOf('containerd'), ['containerd', '--config=/state/config/containerd.toml']);
  assert.is(componentSpec('containerd', layout).netns, 'tplab-node');
});

test("kubelet: the lab's binary, node identity and everything under the state directory", () => {
  const argv = argvOf('kubelet');
  assert.is(argv[0], '/cache/bin/kubelet');
  for (const flag of [
    '--config=/state/config/kubelet.yaml',
    '--kubeconfig=/state/kubeconfig-node',
    '--hostname-override=tplab-node',
    '--node-ip=172.30.0.1',
    '--root-dir=/state/kubelet',
  ]) {
    assert.ok(argv.includes(flag), `missing ${flag}`);
  }
});

test("containerd config: state under the lab, no oom_score_adj changes, netns in the state dir, the lab's CNI", () => {
  const toml = renderContainerdConfig(layout.paths, '/cache/bin/cni');
  for (const line of [
    'root = "/state/containerd/root"',
    'state = "/state/containerd/state"',
    'address = "/state/run/containerd.sock"',
    'sandbox_image = "registry.k8s.io/pause:3.10"',
    'restrict_oom_score_adj = true',
    'netns_mounts_under_state_dir = true',
    'bin_dir = "/cache/bin/cni"',
    'conf_dir = "/state/cni/net.d"',
    'SystemdCgroup = false',
    'Root = "/state/containerd/state/runc"',
  ]) {
    assert.ok(toml.includes(line), `missing ${line}`);
  }
  assert.not.match(
    toml,
    /\/var\/lib|\/etc\/cni|\/opt\//,
    'nothing outside the state directory and the cache',
  );
});

test('kubelet config: webhook authn/authz with the lab CA, cgroupfs under /tplab, no image GC', () => {
  const c = parse(renderKubeletConfig(layout.paths));
  assert.is(c.kind, 'KubeletConfiguration');
  assert.is(c.address, '172.30.0.1');
  assert.is(c.port, 10250);
  assert.is(c.readOnlyPort, 0);
  assert.is(c.authentication.anonymous.enabled, false);
  assert.is(c.authentication.webhook.enabled, true);
  assert.is(c.authentication.x509.clientCAFile, '/state/pki/ca.crt');
  assert.is(c.authorization.mode, 'Webhook');
  assert.is(c.tlsCertFile, '/state/pki/node-serving.crt');
  assert.is(c.containerRuntimeEndpoint, 'unix:///state/run/containerd.sock');
  assert.is(c.cgroupDriver, 'cgroupfs');
  assert.is(c.cgroupRoot, '/tplab');
  assert.equal(c.clusterDNS, ['10.96.0.10']);
  assert.is(c.podLogsDir, '/state/pod-logs');
  assert.is(c.imageGCHighThresholdPercent, 100);
});

test("CNI network: bridge tplab0 with the podCIDR's first address as gateway, host-local under the state dir", () => {
  const c = JSON.parse(renderCniConflist(layout.paths, '10.244.0.0/24'));
  assert.is(c.name, 'tplab');
  const [bridge, portmap] = c.plugins;
  assert.is(bridge.type, 'bridge');
  assert.is(bridge.bridge, 'tplab0');
  assert.is(bridge.isGateway, true);
  assert.is(bridge.hairpinMode, true);
  assert.equal(bridge.ipam.ranges, [[{ subnet: '10.244.0.0/24', gateway: '10.244.0.1' }]]);
  assert.is(bridge.ipam.dataDir, '/state/cni/ipam');
  assert.is(portmap.type, 'portmap');
  assert.is(gatewayOf('10.244.3.0/24'), '10.244.3.1');
  assert.is(bridgeMac('10.244.0.1'), '0a:58:0a:f4:00:01');
});

test('cgroup v1 hierarchies from mountinfo', () => {
  const mountinfo = [
    '30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755',
    '31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
    '32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
    '33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd',
    '34 25 0:30 / /sys/fs/bpf rw - bpf bpf rw',
  ].join('\n');
  assert.equal(cgroupHierarchies(mountinfo), [
    '/sys/fs/cgroup/cpu',
    '/sys/fs/cgroup/memory',
    '/sys/fs/cgroup/systemd',
  ]);
});

test('mounts under the state directory, each before its parent, never a sibling with the same prefix', () => {
  const mountinfo = [
    '40 25 0:40 / /state/kubelet/pods/a/volumes/x rw - tmpfs tmpfs rw',
    '41 25 0:41 / /state/containerd/state/netns/cni-1 rw - nsfs nsfs rw',
    '42 25 0:42 / /state2/other rw - tmpfs tmpfs rw',
    '43 25 0:43 / /state/kubelet/pods/a/volumes/x/deeper rw - tmpfs tmpfs rw',
  ].join('\n');
  const points = mountsUnder('/state', mountinfo);
  assert.equal([...points].sort(), [
    '/state/containerd/state/netns/cni-1',
    '/state/kubelet/pods/a/volumes/x',
    '/state/kubelet/pods/a/volumes/x/deeper',
  ]);
  const at = (p: string) => points.indexOf(p);
  assert.ok(
    at('/state/kubelet/pods/a/volumes/x/deeper') < at('/state/kubelet/pods/a/volumes/x'),
    'a mount before its parent',
  );
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

test("CoreDNS: Deployment of the lab's CoreDNS image, kube-dns at 10.96.0.10, no upstream forwarding", () => {
  const objects = corednsObjects('docker.io/lab/coredns:1.14.2');
  const svc = objects.find((o) => o.kind === 'Service') as { spec: { clusterIP: string } } | undefined;
  assert.is(svc?.spec.clusterIP, '10.96.0.10');
  const deploy = objects.find((o) => o.kind === 'Deployment') as
    | { spec: { template: { spec: { containers: { image: string }[] } } } }
    | undefined;
  assert.is(deploy?.spec.template.spec.containers[0]?.image, 'docker.io/lab/coredns:1.14.2');
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
