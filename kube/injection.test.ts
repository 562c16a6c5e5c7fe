// The webhook's patches, checked against golden files (kube/testdata/injection/*.golden.yaml; run with
// REFRESH_GOLDEN=true to rewrite them), and the properties a user relies on whatever the golden says.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { parsePortMappings } from '../netaddr/parse.js';
import {
  applyJsonPatch,
  escapeJsonPointer,
  type InjectionConfig,
  type OwnerWorkload,
  planInjection,
  prefixEnv,
} from './injection.js';

const dataDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../kube/testdata/injection');
const refresh = process.env.REFRESH_GOLDEN === 'true';

const config: InjectionConfig = {
  version: '0.1.0',
  agentImage: 'tp/tp:0.1.0',
  initImage: 'tp/tp:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  agentUid: 7777,
  agentPort: 15001,
  managerAddress: 'traffic-manager.tp-system:8081',
  logLevel: 'info',
  defaultMechanism: 'iptables',
  agentResources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
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

test('every injected pod keeps its app containers and ports exactly as written', () => {
  for (const name of cases) {
    const c = loadCase(name);
    const plan = planInjection(c.pod, c.owner, config);
    if (plan.action !== 'inject') continue;
    const patched = applyJsonPatch(c.pod, plan.patch);
    const apps = patched.spec!.containers.filter((x) => x.name !== 'tp-agent');
    assert.equal(apps, c.pod.spec!.containers, name);
    assert.equal(patched.spec!.initContainers![0]!.name, 'tp-init', name);
    assert.equal(patched.spec!.initContainers!.slice(1), c.pod.spec!.initContainers ?? [], name);
  }
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
  assert.is(env.get('TP_HOST_IP')!.valueFrom!.fieldRef!.fieldPath, 'status.hostIP');
  assert.is(env.get('TP_WORKLOAD_NAME')!.value, 'echo');
  assert.is(env.get('TP_MANAGER_ADDRESS')!.value, 'traffic-manager.tp-system:8081');
  assert.equal(parsePortMappings(env.get('TP_PORTS')!.value!), [{ appPort: 8080, agentPort: 15001 }]);
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

test.run();
