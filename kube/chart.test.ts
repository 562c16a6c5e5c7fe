// The Helm chart, rendered by the real helm: lint passes, the certificates the chart generates are the
// ones the webhook configuration trusts, RBAC follows managedNamespaces, the values schema refuses bad
// input, and the manager's environment parses with the code that reads it in the cluster.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { V1Deployment, V1Job, V1MutatingWebhookConfiguration, V1Secret } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { cachedBinDir } from '../lab/binaries.js';
import { kubeManagerConfigFromEnv } from '../manager/kubernetes/manager-config.js';
import { requirementSuite } from '../testbed/suite.js';
import { AGENT_LABEL, AGENT_LABEL_VALUE, SESSION_API_VERSION, sessionApiGroup } from './annotations.js';
import { findHelm, helmArgs, shippedChart } from './helm.js';

function locateHelm(): string | undefined {
  try {
    return findHelm();
  } catch {
    // The lab's build caches helm (in $TP_LAB_CACHE when set); use it when it is not on PATH.
    const candidate = path.join(cachedBinDir(), 'helm');
    return fs.existsSync(candidate) ? candidate : undefined;
  }
}

const helm = locateHelm();
const chart = shippedChart();

/** The tests that render the chart with the real helm: skipped visibly without it, a failure under CI=true. */
const withHelm = requirementSuite(
  'the chart rendered by helm',
  helm ? undefined : 'helm not found (install it, set TP_HELM, or build the lab: tp-lab build)',
);
const helmTest = (name: string, body: () => void | Promise<void>) => {
  if (withHelm.ready) withHelm.test(name, body);
};

interface K8sObject {
  kind: string;
  metadata: { name: string; namespace?: string; annotations?: Record<string, string> };
  [k: string]: unknown;
}

function render(...set: string[]): K8sObject[] {
  const args = ['template', 'traffic-manager', chart, '-n', 'tp-system', '--kube-version', '1.34.0'];
  for (const s of set) args.push('--set', s);
  const out = execFileSync(helm!, args, { encoding: 'utf8' });
  return YAML.parseAllDocuments(out)
    .map((d) => d.toJSON() as K8sObject | null)
    .filter((d): d is K8sObject => d !== null);
}

function one<T>(objs: K8sObject[], kind: string, name?: string): T {
  const found = objs.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
  assert.is(found.length, 1, `exactly one ${kind} ${name ?? ''}`);
  return found[0] as unknown as T;
}

helmTest('helm lint --strict passes, cluster-wide and namespaced', () => {
  execFileSync(helm!, ['lint', '--strict', chart], { stdio: 'pipe' });
  execFileSync(helm!, ['lint', '--strict', chart, '--set', 'managedNamespaces={a,b}'], { stdio: 'pipe' });
});

helmTest(
  'the manager reads a 32-byte signing key from its own Secret (resume tokens survive a restart)',
  () => {
    const objs = render();
    const secret = one<V1Secret>(objs, 'Secret', 'traffic-manager-signing-key');
    assert.is(Buffer.from(secret.data!.key!, 'base64').length, 32);
    assert.is.not(
      one<V1Secret>(render(), 'Secret', 'traffic-manager-signing-key').data!.key,
      secret.data!.key,
      'a key of its own for each install (helm template cannot look up the one installed)',
    );
    const pod = one<V1Deployment>(objs, 'Deployment', 'traffic-manager').spec!.template.spec!;
    const volume = pod.volumes!.find((v) => v.secret?.secretName === 'traffic-manager-signing-key');
    assert.ok(volume, 'the Secret is mounted');
    const manager = pod.containers.find((c) => c.name === 'manager')!;
    const mount = manager.volumeMounts!.find((m) => m.name === volume!.name)!;
    const file = manager.env!.find((e) => e.name === 'TP_SIGNING_KEY_FILE')!.value!;
    assert.is(file, `${mount.mountPath}/key`);
  },
);

helmTest(
  'the webhook trusts exactly the certificate the manager serves, for the Service name it calls',
  () => {
    const objs = render();
    const secret = one<V1Secret>(objs, 'Secret', 'traffic-manager-webhook-tls');
    const hook = one<V1MutatingWebhookConfiguration>(objs, 'MutatingWebhookConfiguration');
    const webhook = hook.webhooks![0]!;
    assert.is(webhook.failurePolicy, 'Ignore');
    assert.is(webhook.sideEffects, 'None');
    assert.equal(webhook.clientConfig.service, {
      name: 'traffic-manager-webhook',
      namespace: 'tp-system',
      path: '/mutate-pods',
      port: 443,
    });
    assert.is(webhook.clientConfig.caBundle, secret.data!['ca.crt']);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-chart-test-'));
    try {
      fs.writeFileSync(path.join(dir, 'ca.crt'), Buffer.from(secret.data!['ca.crt']!, 'base64'));
      fs.writeFileSync(path.join(dir, 'tls.crt'), Buffer.from(secret.data!['tls.crt']!, 'base64'));
      const verify = spawnSync('openssl', ['verify', '-CAfile', 'ca.crt', 'tls.crt'], {
        cwd: dir,
        encoding: 'utf8',
      });
      assert.is(verify.status, 0, verify.stderr);
      const san = execFileSync('openssl', ['x509', '-in', 'tls.crt', '-noout', '-ext', 'subjectAltName'], {
        cwd: dir,
        encoding: 'utf8',
      });
      assert.match(san, 'DNS:traffic-manager-webhook.tp-system.svc');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // The webhook never sees the manager's own namespace nor kube-system.
    const excluded = webhook.namespaceSelector!.matchExpressions!.find((e) => e.operator === 'NotIn')!;
    assert.ok(excluded.values!.includes('tp-system') && excluded.values!.includes('kube-system'));
  },
);

helmTest('the manager Deployment runs the tp image and its environment parses', () => {
  const objs = render(
    'agent.uid=9999',
    'agent.mechanism=ebpf',
    'agent.probePort=16021',
    'logLevel=debug',
    'serviceCIDR=10.96.0.0/12',
  );
  const deploy = one<V1Deployment>(objs, 'Deployment', 'traffic-manager');
  const c = deploy.spec!.template.spec!.containers[0]!;
  assert.is(c.image, 'tp/tp:0.1.0');
  assert.equal(c.command, ['tp-manager']);
  const env: NodeJS.ProcessEnv = {};
  for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  env.TP_MANAGER_NAMESPACE = 'tp-system';
  const config = kubeManagerConfigFromEnv(env);
  assert.is(config.injection.agentUid, 9999);
  assert.is(config.injection.agentPort, 15001);
  assert.is(config.injection.probePort, 16021);
  assert.is(config.injection.defaultMechanism, 'ebpf');
  assert.is(config.injection.logLevel, 'debug');
  assert.is(config.injection.managerAddress, 'traffic-manager.tp-system:8081');
  assert.is(config.injection.agentImage, 'tp/tp:0.1.0');
  assert.is(config.serviceCidr, '10.96.0.0/12');
  assert.is(config.agentArrivalTimeoutMs, 90_000);
  assert.is(config.drainMs, 10_000);
  assert.equal(config.managedNamespaces, []);
  assert.equal(config.injection.agentResources?.requests, { cpu: '10m', memory: '48Mi' });
  const services = objs.filter((o) => o.kind === 'Service').map((o) => o.metadata.name);
  assert.equal(services.sort(), ['traffic-manager', 'traffic-manager-webhook']);
});

helmTest('RBAC: cluster-wide by default, only the listed namespaces otherwise', () => {
  type Rule = { resources?: string[]; verbs?: string[] };
  const clusterRules = (objs: K8sObject[]) =>
    (one<{ rules: Rule[] }>(objs, 'ClusterRole', 'tp-traffic-manager-tp-system').rules ?? []).flatMap(
      (r) => r.resources ?? [],
    );
  const wide = render();
  assert.ok(clusterRules(wide).includes('deployments'));
  assert.ok(!wide.some((o) => o.kind === 'Role' && ['a', 'b'].includes(o.metadata.namespace ?? '')));

  const limited = render('managedNamespaces={a,b}');
  assert.ok(!clusterRules(limited).includes('deployments'), 'no cluster-wide workload access');
  assert.ok(clusterRules(limited).includes('nodes'));
  for (const ns of ['a', 'b']) {
    const role = limited.find((o) => o.kind === 'Role' && o.metadata.namespace === ns) as unknown as {
      rules: Rule[];
    };
    assert.ok(role, `a Role in ${ns}`);
    const deployRule = role.rules.find((r) => r.resources?.includes('deployments'))!;
    assert.equal(deployRule.verbs, ['get', 'list', 'watch', 'patch']);
    assert.ok(limited.some((o) => o.kind === 'RoleBinding' && o.metadata.namespace === ns));
  }
  const webhook = one<V1MutatingWebhookConfiguration>(limited, 'MutatingWebhookConfiguration').webhooks![0]!;
  const only = webhook.namespaceSelector!.matchExpressions!.find((e) => e.operator === 'In')!;
  assert.equal(only.values, ['a', 'b']);
  const env = one<V1Deployment>(limited, 'Deployment').spec!.template.spec!.containers[0]!.env!;
  assert.is(env.find((e) => e.name === 'TP_MANAGED_NAMESPACES')!.value, 'a,b');
});

helmTest('RBAC: the manager may review tokens and access, and nothing it does not use', () => {
  type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[] };
  for (const objs of [render(), render('managedNamespaces={a,b}')]) {
    const rules = one<{ rules: Rule[] }>(objs, 'ClusterRole', 'tp-traffic-manager-tp-system').rules;
    const grants = (resource: string) => rules.find((r) => r.resources?.includes(resource))?.verbs;
    assert.equal(grants('tokenreviews'), ['create']);
    assert.equal(grants('subjectaccessreviews'), ['create']);
    for (const unused of ['namespaces', 'events', 'secrets']) assert.is(grants(unused), undefined, unused);
    const reader = one<{ roleRef: { name: string }; subjects: { name: string }[] }>(
      objs,
      'RoleBinding',
      'tp-traffic-manager-tp-system-auth-reader',
    );
    assert.is((reader as unknown as K8sObject).metadata.namespace, 'kube-system');
    assert.is(reader.roleRef.name, 'extension-apiserver-authentication-reader');
  }
});

helmTest('the session API: an APIService served by the webhook Service, trusting the chart CA', () => {
  const objs = render();
  const api = one<{
    spec: { group: string; version: string; service: object; caBundle: string };
  }>(objs, 'APIService', 'v1alpha1.tp-system.sessions.tp.dev');
  assert.is(api.spec.group, sessionApiGroup('tp-system'));
  assert.is(api.spec.version, SESSION_API_VERSION);
  assert.equal(api.spec.service, { name: 'traffic-manager-webhook', namespace: 'tp-system', port: 443 });
  assert.is(api.spec.caBundle, one<V1Secret>(objs, 'Secret', 'traffic-manager-webhook-tls').data!['ca.crt']);
  // The aggregator checks the endpoints of the Service port by name.
  const svc = one<{ spec: { ports: { name: string; port: number }[] } }>(
    objs,
    'Service',
    'traffic-manager-webhook',
  );
  assert.equal(
    svc.spec.ports.map((p) => [p.name, p.port]),
    [['https', 443]],
  );
});

helmTest('clients: who may use tp is the chart values', () => {
  type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[] };
  const none = render();
  const role = one<{ rules: Rule[] }>(none, 'ClusterRole', 'tp-client-tp-system');
  assert.equal(role.rules, [
    { apiGroups: ['tp-system.sessions.tp.dev'], resources: ['sessiontokens'], verbs: ['create'] },
  ]);
  const ns = one<{ rules: Rule[] }>(none, 'Role', 'tp-client');
  assert.ok(ns.rules.some((r) => r.resources?.includes('pods/portforward') && r.verbs?.includes('create')));
  assert.ok(
    !none.some((o) => o.metadata.name === 'tp-client' && o.kind === 'RoleBinding'),
    'no binding by default',
  );
  const revoker = one<{ rules: Rule[] }>(none, 'ClusterRole', 'tp-intercept-admin-tp-system');
  assert.equal(revoker.rules, [{ apiGroups: ['tp.dev'], resources: ['intercepts'], verbs: ['delete'] }]);
  const bound = render('clients.subjects[0].kind=Group', 'clients.subjects[0].name=developers');
  for (const [kind, name] of [
    ['ClusterRoleBinding', 'tp-client-tp-system'],
    ['RoleBinding', 'tp-client'],
  ] as const) {
    const b = one<{ subjects: object[] }>(bound, kind, name);
    assert.equal(b.subjects, [{ kind: 'Group', name: 'developers' }]);
  }
});

helmTest('NetworkPolicy: on by default, agents to gRPC, the API server to the webhook; off by value', () => {
  interface Peer {
    podSelector?: { matchLabels?: Record<string, string> };
    namespaceSelector?: { matchExpressions?: { values: string[] }[] };
    ipBlock?: { cidr: string };
  }
  interface Policy {
    spec: { policyTypes: string[]; ingress: { from?: Peer[]; ports: { port: string }[] }[] };
  }
  const p = one<Policy>(render(), 'NetworkPolicy', 'traffic-manager');
  assert.equal(p.spec.policyTypes, ['Ingress']);
  const grpc = p.spec.ingress.find((r) => r.ports[0]!.port === 'grpc')!;
  assert.equal(grpc.from![0]!.podSelector!.matchLabels, { [AGENT_LABEL]: AGENT_LABEL_VALUE });
  assert.equal(grpc.from![0]!.namespaceSelector, {});
  const hook = p.spec.ingress.find((r) => r.ports[0]!.port === 'webhook')!;
  assert.is(hook.from, undefined, 'the API server may come from anywhere unless told');
  const limited = one<Policy>(
    render('managedNamespaces={a,b}', 'networkPolicy.apiServerCIDRs={192.0.2.10/32}'),
    'NetworkPolicy',
  );
  const only = limited.spec.ingress.find((r) => r.ports[0]!.port === 'grpc')!.from![0]!;
  assert.equal(only.namespaceSelector!.matchExpressions![0]!.values, ['a', 'b']);
  const api = limited.spec.ingress.find((r) => r.ports[0]!.port === 'webhook')!;
  assert.equal(api.from, [{ ipBlock: { cidr: '192.0.2.10/32' } }]);
  assert.ok(!render('networkPolicy.enabled=false').some((o) => o.kind === 'NetworkPolicy'));
});

helmTest(
  'metrics: off by default; on by value, a port, a Service, the policy and an optional ServiceMonitor',
  () => {
    const off = render();
    assert.ok(!off.some((o) => o.metadata.name === 'traffic-manager-metrics'));
    assert.ok(!off.some((o) => o.kind === 'ServiceMonitor'));
    const on = render('metrics.enabled=true', 'metrics.port=9100');
    const d = one<V1Deployment>(on, 'Deployment');
    const c = d.spec!.template.spec!.containers[0]!;
    assert.ok(c.ports!.some((p) => p.name === 'metrics' && p.containerPort === 9100));
    const env: NodeJS.ProcessEnv = { TP_MANAGER_NAMESPACE: 'tp-system' };
    for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
    assert.is(kubeManagerConfigFromEnv(env).metricsPort, 9100);
    const svc = one<{ spec: { type: string; ports: { port: number; targetPort: string }[] } }>(
      on,
      'Service',
      'traffic-manager-metrics',
    );
    assert.is(svc.spec.type, 'ClusterIP');
    assert.equal(svc.spec.ports[0], { name: 'metrics', port: 9100, targetPort: 'metrics', protocol: 'TCP' });
    type Rule = { from?: object[]; ports: { port: string }[] };
    const rule = one<{ spec: { ingress: Rule[] } }>(on, 'NetworkPolicy').spec.ingress.find(
      (r) => r.ports[0]!.port === 'metrics',
    );
    assert.equal(rule?.from, [{ namespaceSelector: {} }], 'any pod in the cluster, nothing outside it');
    const monitored = render('metrics.enabled=true', 'metrics.serviceMonitor.enabled=true');
    const sm = one<{
      spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string }[] };
    }>(monitored, 'ServiceMonitor');
    assert.is(sm.spec.endpoints[0]!.port, 'metrics');
    assert.is(sm.spec.selector.matchLabels['tp.dev/metrics'], 'true');
  },
);

helmTest('security values reach the manager: enforcing by default, permissive by value', () => {
  const configOf = (...set: string[]) => {
    const c = one<V1Deployment>(render(...set), 'Deployment').spec!.template.spec!.containers[0]!;
    const env: NodeJS.ProcessEnv = { TP_MANAGER_NAMESPACE: 'tp-system' };
    for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
    return kubeManagerConfigFromEnv(env);
  };
  const d = configOf();
  assert.is(d.securityMode, 'enforcing');
  assert.equal(d.tunnelAllowedCidrs, []);
  assert.is(d.injection.tokenAudience, 'tp-manager.tp-system');
  assert.is(d.injection.tokenExpirationSeconds, 3600);
  const p = configOf(
    'security.mode=permissive',
    'security.tunnel.allowedCIDRs={10.1.0.0/16}',
    'agent.tokenExpirationSeconds=900',
  );
  assert.is(p.securityMode, 'permissive');
  assert.equal(
    p.tunnelAllowedCidrs.map((c) => c.text),
    ['10.1.0.0/16'],
  );
  assert.is(p.injection.tokenExpirationSeconds, 900);
});

helmTest('helm uninstall removes the agents first: a pre-delete hook Job running the manager', () => {
  const job = one<V1Job>(render(), 'Job');
  assert.is(job.metadata!.annotations!['helm.sh/hook'], 'pre-delete');
  const c = job.spec!.template.spec!.containers[0]!;
  assert.equal([...c.command!, ...c.args!], ['tp-manager', 'uninstall-agents']);
  assert.ok(!render('uninstallAgentsOnDelete=false').some((o) => o.kind === 'Job'));
});

helmTest('the values schema refuses what would break the cluster, naming the value', () => {
  for (const [set, field] of [
    ['agent.mechanism=magic', 'mechanism'],
    ['agent.uid=0', 'uid'],
    ['agent.probePort=70000', 'probePort'],
    ['logLevel=loud', 'logLevel'],
    ['serviceCIDR=banana', 'serviceCIDR'],
    ['security.mode=off', 'mode'],
    ['agent.tokenExpirationSeconds=60', 'tokenExpirationSeconds'],
    ['security.tunnel.allowedCIDRs={banana}', 'allowedCIDRs'],
  ] as const) {
    const r = spawnSync(helm!, ['template', 'x', chart, '--kube-version', '1.34.0', '--set', set], {
      encoding: 'utf8',
    });
    assert.is.not(r.status, 0, set);
    assert.match(r.stderr, field, set);
  }
});

test('tp helm command lines', () => {
  assert.equal(helmArgs('install', { kubeconfig: '/k', context: 'lab', set: ['logLevel=debug'] }, '/c'), [
    'install',
    'traffic-manager',
    '/c',
    '--create-namespace',
    '--namespace',
    'tp-system',
    '--kubeconfig',
    '/k',
    '--kube-context',
    'lab',
    '--set',
    'logLevel=debug',
    '--wait',
    '--timeout',
    '5m',
  ]);
  assert.equal(helmArgs('upgrade', { namespace: 'tools', valuesFiles: ['v.yaml'] }, '/c'), [
    'upgrade',
    'traffic-manager',
    '/c',
    '--reset-then-reuse-values',
    '--namespace',
    'tools',
    '--values',
    'v.yaml',
    '--wait',
    '--timeout',
    '5m',
  ]);
  assert.equal(helmArgs('uninstall', { set: ['ignored=1'], wait: false, timeout: '2m' }, '/c'), [
    'uninstall',
    'traffic-manager',
    '--namespace',
    'tp-system',
    '--timeout',
    '2m',
  ]);
});

test.run();
withHelm.test.run();
