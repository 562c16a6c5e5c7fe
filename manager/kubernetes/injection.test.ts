// The webhook's patches, checked against golden files (testdata/injection/*.golden.yaml; run with
// REFRESH_GOLDEN=true to rewrite them), and the properties a user relies on whatever the golden says.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { parsePortMappings } from '../../netaddr/parse.js';
import { decodeProbes, parseProbePath } from '../../probes/spec.js';
import {
  applyJsonPatch,
  appVolumeMounts,
  escapeJsonPointer,
  type InjectionConfig,
  type OwnerWorkload,
  planInjection,
  prefixEnv,
} from './injection.js';

const dataDir = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../../manager/kubernetes/testdata/injection',
);
const refresh = process.env.REFRESH_GOLDEN === 'true';

const config: InjectionConfig = {
  version: '0.1.0',
  agentImage: 'tp/tp:0.1.0',
  initImage: 'tp/tp:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  agentUid: 7777,
  agentPort: 15001,
  probePort: 15021,
  directPort: 15022,
  managerAddress: 'traffic-manager.tp-system:8081',
  tokenAudience: 'tp-manager.tp-system',
  tokenExpirationSeconds: 3600,
  logLevel: 'info',
  defaultMechanism: 'iptables',
  agentResources: { requests: { cpu: '10m', memory: '48Mi' }, limits: { memory: '192Mi' } },
};

interface Case {
  owner?: OwnerWorkload;
  pod: V1Pod;
}

function loadCase(name: string): Case {
  return YAML.parse(fs.readFileSync(path.join(dataDir, `${name}.input.yaml`), 'utf8')) as Case;
}

const cases = fs
  .readdirSync(dataDir)
  .filter((f) => f.endsWith('.input.yaml'))
  .map((f) => f.slice(0, -'.input.yaml'.length))
  .sort();

for (const name of cases) {
  test(`golden: ${name}`, () => {
    const c = loadCase(name);
    const plan = planInjection(c.pod, c.owner, config);
    const rendered = YAML.stringify(plan, { lineWidth: 0 });
    const golden = path.join(dataDir, `${name}.golden.yaml`);
    if (refresh || !fs.existsSync(golden)) fs.writeFileSync(golden, rendered);
    assert.fixture(rendered, fs.readFileSync(golden, 'utf8'));
  });
}

const PROBE_FIELDS = [
  ['readiness', 'readinessProbe'],
  ['liveness', 'livenessProbe'],
  ['startup', 'startupProbe'],
] as const;

/** A container with the probes the plan rewrote taken out (everything else must be as written). */
function withoutRewrittenProbes(c: V1Container, rewritten: Set<string>): V1Container {
  const out = { ...c };
  for (const [kind, field] of PROBE_FIELDS) if (rewritten.has(`${c.name}/${kind}`)) delete out[field];
  return out;
}

test('every injected pod keeps its containers and ports as written, but for the rewritten probes', () => {
  for (const name of cases) {
    const c = loadCase(name);
    const plan = planInjection(c.pod, c.owner, config);
    if (plan.action !== 'inject') continue;
    const rewritten = new Set(plan.probes.map((p) => `${p.container}/${p.kind}`));
    const patched = applyJsonPatch(c.pod, plan.patch);
    const strip = (list: V1Container[] | undefined) =>
      (list ?? []).map((x) => withoutRewrittenProbes(x, rewritten));
    const apps = patched.spec!.containers.filter((x) => x.name !== 'tp-agent');
    assert.equal(strip(apps), strip(c.pod.spec!.containers), name);
    assert.equal(patched.spec!.initContainers![0]!.name, 'tp-init', name);
    assert.equal(strip(patched.spec!.initContainers!.slice(1)), strip(c.pod.spec!.initContainers), name);
    // Each rewritten probe: an httpGet to the probe port at its own path, every other field kept.
    const before = [...c.pod.spec!.containers, ...(c.pod.spec!.initContainers ?? [])];
    const after = [...apps, ...patched.spec!.initContainers!.slice(1)];
    for (const [i, container] of after.entries()) {
      for (const [kind, field] of PROBE_FIELDS) {
        const original = before[i]![field];
        if (!rewritten.has(`${container.name}/${kind}`)) {
          assert.equal(container[field], original, `${name}: ${container.name}/${kind} untouched`);
          continue;
        }
        const { httpGet, ...timings } = container[field]!;
        const { httpGet: _h, tcpSocket: _t, grpc: _g, ...originalTimings } = original!;
        assert.equal(timings, originalTimings, `${name}: ${container.name}/${kind} timings`);
        assert.equal(httpGet, {
          path: `/tp-probe/${container.name}/${kind}`,
          port: plan.probePort,
          scheme: 'HTTP',
        });
        assert.equal(parseProbePath(httpGet!.path!), { agent: false, container: container.name, kind });
      }
    }
  }
});

test('TP_PROBES: what the injector writes is what the agent reads, and the pod records it', () => {
  for (const name of cases) {
    const c = loadCase(name);
    const plan = planInjection(c.pod, c.owner, config);
    if (plan.action !== 'inject') continue;
    const pod = applyJsonPatch(c.pod, plan.patch);
    const agent = pod.spec!.containers.find((x) => x.name === 'tp-agent')!;
    const env = new Map(agent.env!.map((e) => [e.name, e.value]));
    assert.is(env.get('TP_PROBE_PORT'), String(plan.probePort), name);
    assert.equal(decodeProbes(env.get('TP_PROBES'), 'TP_PROBES'), plan.probes, name);
    const annotations = pod.metadata!.annotations!;
    assert.is(
      annotations['tp.dev/probes-rewritten'],
      plan.probes.length ? plan.probes.map((p) => `${p.container}/${p.kind}`).join(',') : undefined,
      name,
    );
    // The probe port is never captured, and never a port the pod uses.
    assert.not.ok(plan.ports.some((p) => p.appPort === plan.probePort || p.agentPort === plan.probePort));
    assert.is(agent.readinessProbe!.httpGet!.port, plan.probePort);
    assert.is(agent.readinessProbe!.httpGet!.path, '/tp-probe/agent');
  }
});

test('probes: named and numeric ports resolved, headers and scheme kept, the path made absolute', () => {
  const c = loadCase('probes-http');
  const plan = planInjection(c.pod, c.owner, config);
  if (plan.action !== 'inject') throw new Error(`expected inject, got ${plan.action}`);
  assert.equal(plan.probes, [
    {
      container: 'web',
      kind: 'readiness',
      timeoutSeconds: 1,
      httpGet: {
        port: 8080,
        scheme: 'HTTP',
        path: '/ready?verbose=1',
        httpHeaders: [
          { name: 'X-Probe', value: 'readiness' },
          { name: 'Host', value: 'web.example' },
        ],
      },
    },
    {
      container: 'web',
      kind: 'liveness',
      timeoutSeconds: 3,
      httpGet: { port: 8080, scheme: 'HTTPS', path: '/live', httpHeaders: [] },
    },
    {
      container: 'web',
      kind: 'startup',
      timeoutSeconds: 1,
      httpGet: { port: 9901, scheme: 'HTTP', path: '/healthz', httpHeaders: [] },
    },
  ]);
});

test('probes left as written: exec, a host that is not the pod, an unknown port name, an uncaptured port', () => {
  const c = loadCase('probes-left-alone');
  const plan = planInjection(c.pod, c.owner, config);
  if (plan.action !== 'inject') throw new Error(`expected inject, got ${plan.action}`);
  assert.equal(
    plan.probes.map((p) => `${p.container}/${p.kind}`),
    ['other/readiness'],
  );
  const pod = applyJsonPatch(c.pod, plan.patch);
  const app = pod.spec!.containers[0]!;
  assert.equal(app.readinessProbe, c.pod.spec!.containers[0]!.readinessProbe, 'exec untouched');
  const why = pod.metadata!.annotations!['tp.dev/probes-not-rewritten']!.split('; ');
  assert.equal(why, [
    'app/liveness: host db.internal is not this pod, so the probe never reaches the capture',
    'app/startup: port "metrics" is not a port name of container app (the kubelet reports that as it would without tp)',
    'other/liveness: host 10.0.0.1 is not this pod, so the probe never reaches the capture',
    'other/startup: port 9100 is not captured, so the probe reaches the app directly',
  ]);
});

test('a sidecar init container: its probe on a captured port is rewritten where it stands after tp-init', () => {
  const c = loadCase('probes-native-sidecar');
  const plan = planInjection(c.pod, c.owner, config);
  if (plan.action !== 'inject') throw new Error(`expected inject, got ${plan.action}`);
  const pod = applyJsonPatch(c.pod, plan.patch);
  assert.equal(
    pod.spec!.initContainers!.map((x) => x.name),
    ['tp-init', 'migrate', 'proxy'],
  );
  const proxy = pod.spec!.initContainers![2]!;
  assert.is(proxy.livenessProbe!.httpGet!.path, '/tp-probe/proxy/liveness');
  assert.is(proxy.livenessProbe!.periodSeconds, 4);
  assert.equal(proxy.readinessProbe, c.pod.spec!.initContainers![1]!.readinessProbe, 'its own port: as is');
});

test('the probe port moves past a port the pod declares or probes', () => {
  const c = loadCase('probes-port-15021');
  const plan = planInjection(c.pod, c.owner, config);
  if (plan.action !== 'inject') throw new Error(`expected inject, got ${plan.action}`);
  assert.is(plan.probePort, 15023);
  assert.equal(
    plan.ports.map((p) => `${p.appPort}:${p.agentPort}`),
    ['15021:15001'],
  );
});

test('the agent gets what it needs from the downward API and a TP_PORTS the agent parses', () => {
  const c = loadCase('deployment-echo');
  const plan = planInjection(c.pod, c.owner, config);
  assert.is(plan.action, 'inject');
  if (plan.action !== 'inject') return;
  const pod = applyJsonPatch(c.pod, plan.patch);
  const agent = pod.spec!.containers.find((x) => x.name === 'tp-agent')!;
  const env = new Map(agent.env!.map((e) => [e.name, e]));
  assert.is(env.get('TP_POD_NAME')!.valueFrom!.fieldRef!.fieldPath, 'metadata.name');
  assert.is(env.get('TP_POD_IP')!.valueFrom!.fieldRef!.fieldPath, 'status.podIP');
  assert.is(env.get('TP_NAMESPACE')!.valueFrom!.fieldRef!.fieldPath, 'metadata.namespace');
  // Probes are told apart by their path on the probe port, never by their source address.
  assert.not.ok(env.has('TP_HOST_IP'));
  assert.is(env.get('TP_PROBE_PORT')!.value, '15021');
  assert.not.ok(env.has('TP_PROBES'), 'no probes in this pod');
  assert.is(env.get('TP_WORKLOAD_NAME')!.value, 'echo');
  assert.is(env.get('TP_MANAGER_ADDRESS')!.value, 'traffic-manager.tp-system:8081');
  assert.equal(parsePortMappings(env.get('TP_PORTS')!.value!, 'TP_PORTS'), [
    { appPort: 8080, agentPort: 15001 },
  ]);
  assert.is(agent.securityContext!.runAsUser, 7777);
  assert.is(agent.securityContext!.runAsNonRoot, true);
  const init = pod.spec!.initContainers![0]!;
  assert.equal(init.args, ['apply', '--ports', '8080', '--agent-port', '15001', '--agent-uid', '7777']);
  assert.equal(init.securityContext!.capabilities!.add, ['NET_ADMIN', 'NET_RAW']);
  assert.is(pod.metadata!.annotations!['tp.dev/ports'], '8080:15001');
});

test('the agent port moves past a port the app already uses, and UDP ports are not captured', () => {
  const c = loadCase('existing-init-two-containers');
  const plan = planInjection(c.pod, c.owner, config);
  if (plan.action !== 'inject') throw new Error(`expected inject, got ${plan.action}`);
  assert.equal(
    plan.ports.map((p) => `${p.appPort}:${p.agentPort}`),
    ['5432:15002', '15001:15002', '9090:15002'],
  );
});

test("tp's agent mechanism wins over the owner's preference, which wins over the chart default", () => {
  const c = loadCase('ebpf'); // the owner prefers ebpf
  const annotations = c.pod.metadata!.annotations!;
  const mechanismOf = (a: Record<string, string>) => {
    const plan = planInjection(
      { ...c.pod, metadata: { ...c.pod.metadata, annotations: a } },
      c.owner,
      config,
    );
    if (plan.action !== 'inject') throw new Error(`expected inject, got ${plan.action}`);
    return plan.mechanism;
  };
  assert.is(mechanismOf(annotations), 'ebpf');
  assert.is(mechanismOf({ ...annotations, 'tp.dev/agent-mechanism': 'iptables' }), 'iptables');
  const { 'tp.dev/mechanism': _owner, ...withoutOwner } = annotations;
  assert.is(mechanismOf(withoutOwner), 'iptables', 'the chart default');
  const bad = planInjection(
    {
      ...c.pod,
      metadata: { ...c.pod.metadata, annotations: { ...annotations, 'tp.dev/agent-mechanism': 'xdp' } },
    },
    c.owner,
    config,
  );
  assert.is(bad.action, 'refuse');
  assert.match((bad as { reason: string }).reason, /unknown mechanism "xdp" in tp.dev\/agent-mechanism/);
});

test('refused pods start unchanged but for an annotation saying why', () => {
  for (const name of ['bare-pod', 'no-ports', 'unknown-mechanism', 'host-network']) {
    const c = loadCase(name);
    const plan = planInjection(c.pod, c.owner, config);
    if (plan.action !== 'refuse') throw new Error(`${name}: expected refuse, got ${plan.action}`);
    assert.match(plan.reason, /^agent not injected: /);
    const patched = applyJsonPatch(c.pod, plan.patch);
    assert.equal(patched.spec, c.pod.spec);
    assert.is(patched.metadata!.annotations!['tp.dev/not-injected'], plan.reason);
  }
});

test('env renaming follows $(VAR) references and keeps the $$ escape', () => {
  const out = prefixEnv(
    [
      { name: 'A', value: '1' },
      { name: 'B', value: '$(A)-$(C)-$$(A)' },
      { name: 'C', value: '$(B)' },
    ],
    'P_',
    'app',
  );
  assert.equal(
    out.map((e) => [e.name, e.value]),
    [
      ['P_A', '1'],
      ['P_B', '$(P_A)-$(C)-$$(A)'],
      ['P_C', '$(P_B)'],
    ],
  );
});

test('JSON pointer escaping of annotation keys', () => {
  assert.is(escapeJsonPointer('tp.dev/inject-agent'), 'tp.dev~1inject-agent');
  assert.is(escapeJsonPointer('a~b'), 'a~0b');
});

test('the agent mounts the app volumes read-only where the app or Kubernetes does, else read-write', () => {
  const pod = {
    spec: {
      volumes: [
        { name: 'cfg', configMap: { name: 'cfg' } },
        { name: 'sec', secret: { secretName: 'sec' } },
        { name: 'token', projected: { sources: [] } },
        { name: 'scratch', emptyDir: {} },
        { name: 'cache', emptyDir: {} },
      ],
      containers: [
        {
          name: 'app',
          volumeMounts: [
            { name: 'cfg', mountPath: '/etc/cfg' },
            { name: 'sec', mountPath: '/etc/sec', readOnly: true },
            { name: 'token', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
            { name: 'scratch', mountPath: '/data/' },
            { name: 'cache', mountPath: '/cache', subPath: 'c', readOnly: true },
          ],
        },
      ],
    },
  } as V1Pod;
  assert.equal(appVolumeMounts(pod, [{ name: 'app', envPrefix: 'TP_APPENV_0_', ports: [] }]), [
    { name: 'cfg', mountPath: '/tp/mounts/app/etc/cfg', readOnly: true },
    { name: 'sec', mountPath: '/tp/mounts/app/etc/sec', readOnly: true },
    {
      name: 'token',
      mountPath: '/tp/mounts/app/var/run/secrets/kubernetes.io/serviceaccount',
      readOnly: true,
    },
    { name: 'scratch', mountPath: '/tp/mounts/app/data', readOnly: false },
    { name: 'cache', mountPath: '/tp/mounts/app/cache', readOnly: true, subPath: 'c' },
  ]);
});

test.run();
