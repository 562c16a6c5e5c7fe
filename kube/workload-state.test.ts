// The workload model: ports a user can intercept, and the agent state a user reads in `tp list` and in
// the errors of `tp intercept`.
import type { V1Deployment, V1Pod, V1ReplicaSet, V1Service } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { templateAnnotationPatch } from '../manager/kubernetes/agent-installer.js';
import {
  agentState,
  buildWorkload,
  findWorkloadPort,
  ownerFromRefs,
  podState,
  type WorkloadPod,
  workloadPorts,
} from './workload-state.js';

const template = {
  metadata: { labels: { app: 'echo' }, annotations: {} as Record<string, string> },
  spec: {
    containers: [
      {
        name: 'echo',
        image: 'lab/echo',
        ports: [
          { name: 'http', containerPort: 8080 },
          { containerPort: 53, protocol: 'UDP' },
        ],
      },
    ],
  },
};

function svc(
  name: string,
  targetPort: number | string,
  selector: Record<string, string> = { app: 'echo' },
): V1Service {
  return { metadata: { name }, spec: { selector, ports: [{ port: 80, targetPort: targetPort as never }] } };
}

test('ports: declared TCP ports, named and numeric targetPorts, undeclared numeric targetPorts', () => {
  const ports = workloadPorts(template, [
    svc('echo', 8080),
    svc('echo-named', 'http'),
    svc('metrics', 9090),
    svc('other', 7000, { app: 'other' }),
  ]);
  assert.equal(ports, [
    {
      name: 'http',
      port: 8080,
      protocol: 'TCP',
      container: 'echo',
      services: ['echo', 'echo-named'],
      servicePorts: [
        { service: 'echo', name: '', port: 80 },
        { service: 'echo-named', name: '', port: 80 },
      ],
    },
    {
      name: '',
      port: 9090,
      protocol: 'TCP',
      container: 'echo',
      services: ['metrics'],
      servicePorts: [{ service: 'metrics', name: '', port: 80 }],
    },
  ]);
});

test('finding the intercepted port: by number, by name, the only one; clear errors otherwise', () => {
  const w = { kind: 'Deployment' as const, name: 'echo', ports: workloadPorts(template, [svc('m', 9090)]) };
  const byNumber = findWorkloadPort(w, 8080);
  assert.ok('port' in byNumber && byNumber.port.name === 'http');
  const byName = findWorkloadPort(w, 'http');
  assert.ok('port' in byName && byName.port.port === 8080);
  const missing = findWorkloadPort(w, 7777);
  assert.ok('error' in missing);
  if ('error' in missing)
    assert.is(missing.error, 'Deployment echo does not expose port 7777: its ports are 8080 (http), 9090');
  const ambiguous = findWorkloadPort(w, undefined);
  assert.ok('error' in ambiguous && /several ports/.test(ambiguous.error));
  const none = findWorkloadPort({ kind: 'Deployment', name: 'w', ports: [] }, 80);
  assert.ok('error' in none && /exposes no TCP port/.test(none.error));
});

function pod(name: string, over: Partial<WorkloadPod> = {}): WorkloadPod {
  return {
    name,
    ip: '10.244.0.5',
    phase: 'Running',
    ready: true,
    terminating: false,
    requested: false,
    hasAgent: false,
    agentReady: false,
    hasInit: false,
    notInjected: '',
    capturedPorts: '',
    mechanism: '',
    failure: '',
    rollout: '',
    ...over,
  };
}

const injected = (name: string) =>
  pod(name, { requested: true, hasAgent: true, agentReady: true, hasInit: true });

test('agent state: not asked, rolling, installed', () => {
  assert.equal(agentState(false, 2, [pod('a'), pod('b')]), { state: 'NO_AGENT', message: '' });
  assert.equal(agentState(true, 2, [pod('a'), injected('b')]), {
    state: 'INSTALLING',
    message: 'rolling out: 1 of 2 pods run the agent',
  });
  assert.equal(agentState(true, 2, [injected('a'), injected('b'), pod('old', { terminating: true })]), {
    state: 'INSTALLED',
    message: '',
  });
});

test('agent state: a refused pod and a pod the webhook never saw are errors that say why', () => {
  const refused = agentState(true, 1, [
    pod('a', { requested: true, notInjected: 'agent not injected: no ports' }),
  ]);
  assert.equal(refused, { state: 'ERROR', message: 'agent not injected: no ports' });
  const missed = agentState(true, 2, [injected('a'), pod('b', { requested: true })]);
  assert.is(missed.state, 'ERROR');
  assert.match(missed.message, /^agent not injected: webhook unreachable: pod b started without the agent/);
});

test('agent state: errors of an earlier rollout do not count once the template was stamped again', () => {
  const old = pod('old', { requested: true, rollout: 't1' });
  assert.is(agentState(true, 1, [old], 't1').state, 'ERROR');
  assert.equal(agentState(true, 1, [old, injected('new')], 't2'), {
    state: 'INSTALLING',
    message: 'rolling out: 1 of 1 pods run the agent',
  });
});

test('agent state: removal in progress, and a workload scaled to zero', () => {
  assert.equal(agentState(false, 2, [injected('a'), pod('b')]), {
    state: 'NO_AGENT',
    message: 'removing the agent: 1 of 2 pods still have it',
  });
  assert.is(agentState(true, 0, []).state, 'ERROR');
});

test('a failing tp-init or a crash-looping agent is an error that names the pod and the logs to read', () => {
  const failing: V1Pod = {
    metadata: { name: 'echo-x', namespace: 'default', annotations: { 'tp.dev/inject-agent': 'enabled' } },
    spec: { initContainers: [{ name: 'tp-init' }], containers: [{ name: 'echo' }, { name: 'tp-agent' }] },
    status: {
      phase: 'Pending',
      initContainerStatuses: [
        {
          name: 'tp-init',
          image: 'tp/tp',
          imageID: '',
          ready: false,
          restartCount: 2,
          state: { waiting: { reason: 'CrashLoopBackOff' } },
          lastState: {
            terminated: {
              exitCode: 3,
              reason: 'Error',
              message: 'iptables-restore: the owner match is missing\n',
            },
          },
        },
      ],
    },
  };
  const state = podState(failing);
  assert.is(
    state.failure,
    'tp-init failed in pod echo-x (exit 3, Error): iptables-restore: the owner match is missing; see kubectl logs -n default echo-x -c tp-init',
  );
  assert.equal(agentState(true, 1, [state]), { state: 'ERROR', message: state.failure });
  const recovered = structuredClone(failing);
  recovered.status!.initContainerStatuses![0]!.state = { terminated: { exitCode: 0 } };
  assert.is(podState(recovered).failure, '');
});

test('owners: ReplicaSet to Deployment, StatefulSet, bare ReplicaSet, bare pod, foreign owner', () => {
  const sets: Record<string, V1ReplicaSet> = {
    'echo-5f7': {
      metadata: {
        name: 'echo-5f7',
        ownerReferences: [
          { apiVersion: 'apps/v1', kind: 'Deployment', name: 'echo', uid: 'd', controller: true },
        ],
      },
    },
    plain: { metadata: { name: 'plain' } },
    rollout: {
      metadata: {
        name: 'rollout',
        ownerReferences: [
          { apiVersion: 'argoproj.io/v1alpha1', kind: 'Rollout', name: 'r', uid: 'r', controller: true },
        ],
      },
    },
  };
  const lookup = (_ns: string, name: string) => sets[name];
  const ref = (kind: string, name: string) => [
    { apiVersion: 'apps/v1', kind, name, uid: 'x', controller: true },
  ];
  assert.equal(ownerFromRefs('default', ref('ReplicaSet', 'echo-5f7'), lookup), {
    kind: 'Deployment',
    name: 'echo',
  });
  assert.equal(ownerFromRefs('default', ref('StatefulSet', 'db'), lookup), {
    kind: 'StatefulSet',
    name: 'db',
  });
  assert.equal(ownerFromRefs('default', ref('ReplicaSet', 'plain'), lookup), {
    kind: 'ReplicaSet',
    name: 'plain',
  });
  assert.is(ownerFromRefs('default', ref('ReplicaSet', 'rollout'), lookup), undefined);
  assert.is(ownerFromRefs('default', ref('ReplicaSet', 'unknown'), lookup), undefined);
  assert.is(ownerFromRefs('default', undefined, lookup), undefined);
  assert.is(ownerFromRefs('default', ref('Job', 'j'), lookup), undefined);
});

test('a whole workload: mechanism from the template, pods sorted, replicas defaulted', () => {
  const deploy: V1Deployment = {
    metadata: { name: 'echo', namespace: 'default', uid: 'u1' },
    spec: {
      selector: { matchLabels: { app: 'echo' } },
      template: {
        ...template,
        metadata: {
          ...template.metadata,
          annotations: { 'tp.dev/inject-agent': 'enabled', 'tp.dev/mechanism': 'ebpf' },
        },
      },
    },
    status: { readyReplicas: 1 },
  };
  const pods: V1Pod[] = [
    {
      metadata: { name: 'echo-b', annotations: { 'tp.dev/inject-agent': 'enabled' } },
      spec: { containers: [{ name: 'echo' }] },
    },
  ];
  const w = buildWorkload('Deployment', deploy, pods, [], 'iptables');
  assert.is(w.mechanism, 'ebpf');
  assert.is(w.replicas, 1);
  assert.is(w.agentState, 'ERROR');
  assert.match(w.agentMessage, /webhook unreachable: pod echo-b/);
});

test("the workload's mechanism: the installed agent's, else the owner's preference, else the default", () => {
  const deployWith = (annotations: Record<string, string>): V1Deployment => ({
    metadata: { name: 'echo', namespace: 'default', uid: 'u1' },
    spec: {
      selector: { matchLabels: { app: 'echo' } },
      template: { ...template, metadata: { ...template.metadata, annotations } },
    },
  });
  const mechanism = (a: Record<string, string>) =>
    buildWorkload('Deployment', deployWith(a), [], [], 'iptables').mechanism;
  const owner = { 'tp.dev/mechanism': 'ebpf' };
  const installed = { ...owner, 'tp.dev/inject-agent': 'enabled', 'tp.dev/agent-mechanism': 'iptables' };
  assert.is(mechanism(installed), 'iptables');
  assert.is(mechanism(owner), 'ebpf');
  assert.is(mechanism({}), 'iptables');
  // Uninstalling removes tp's annotations and leaves the owner's choice as it was.
  const removal = templateAnnotationPatch(undefined, new Date(0)).spec.template.metadata.annotations;
  const after = Object.fromEntries(
    Object.entries({ ...installed, ...removal }).filter((e): e is [string, string] => e[1] !== null),
  );
  assert.equal(after, { 'tp.dev/mechanism': 'ebpf', 'tp.dev/restartedAt': new Date(0).toISOString() });
  assert.is(mechanism(after), 'ebpf');
});

test.run();
