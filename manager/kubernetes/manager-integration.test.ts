// How the manager sees a Kubernetes workload: the cluster's facts merged with the agents that have a
// session. A pod with a ready sidecar is not enough; its agent must have arrived.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Workload, WorkloadPod } from '../../kube/workload-state.js';
import type { AgentInfo } from '../../rpc/gen/manager.js';
import { toManagerWorkload } from './manager-integration.js';

function pod(name: string): WorkloadPod {
  return {
    name,
    ip: '10.244.0.9',
    phase: 'Running',
    ready: true,
    terminating: false,
    requested: true,
    hasAgent: true,
    agentReady: true,
    hasInit: true,
    notInjected: '',
    capturedPorts: '8080:15001',
    mechanism: 'iptables',
    failure: '',
    rollout: 't1',
  };
}

const workload: Workload = {
  kind: 'Deployment',
  name: 'echo',
  namespace: 'default',
  uid: 'u',
  replicas: 2,
  readyReplicas: 2,
  agentRequested: true,
  rollout: 't1',
  mechanism: 'iptables',
  agentState: 'INSTALLED',
  agentMessage: '',
  ports: [
    { name: 'http', port: 8080, protocol: 'TCP', container: 'echo', services: ['echo'], servicePorts: [] },
  ],
  pods: [pod('echo-a'), pod('echo-b')],
  labels: { app: 'echo' },
};

const agent = (podName: string): AgentInfo => ({
  name: 'echo',
  namespace: 'default',
  kind: 'Deployment',
  podName,
  podIp: '10.244.0.9',
  version: '0.1.0',
  mechanism: 'iptables',
  containers: [],
  counters: undefined,
  directPort: 0,
});

test('installed only when every injected pod has an agent session', () => {
  const waiting = toManagerWorkload(workload, [agent('echo-a')]);
  assert.is(waiting.agentState, 'INSTALLING');
  assert.is(waiting.agentMessage, 'waiting for the agents of echo-b to connect to the traffic manager');
  const done = toManagerWorkload(workload, [agent('echo-b'), agent('echo-a')]);
  assert.is(done.agentState, 'INSTALLED');
  assert.equal(
    done.agents.map((a) => a.podName),
    ['echo-a', 'echo-b'],
  );
});

test('installed only when no pod without the agent is left, a terminating one included', () => {
  const old = { ...pod('echo-old'), hasAgent: false, hasInit: false, requested: false, terminating: true };
  const rolling = { ...workload, pods: [...workload.pods, old] };
  const arrived = [agent('echo-a'), agent('echo-b')];
  const w = toManagerWorkload(rolling, arrived);
  assert.is(w.agentState, 'INSTALLING');
  assert.is(
    w.agentMessage,
    'waiting for echo-old (without the agent) to terminate: the Service may still send requests there',
  );
  const both = toManagerWorkload(rolling, [agent('echo-a')]);
  assert.match(
    both.agentMessage,
    /^waiting for the agents of echo-b to connect .*, and for echo-old \(without/,
  );
  const gone = { ...rolling, pods: [...workload.pods, { ...old, phase: 'Succeeded' }] };
  assert.is(
    toManagerWorkload(gone, arrived).agentState,
    'INSTALLED',
    'a pod that has exited is not waited for',
  );
});

test('ports carry the agent port the webhook recorded; 0 before any pod is injected', () => {
  assert.equal(toManagerWorkload(workload, []).ports, [
    { name: 'http', appPort: 8080, agentPort: 15001, protocol: 'TCP', servicePorts: [] },
  ]);
  const bare = { ...workload, agentRequested: false, agentState: 'NO_AGENT' as const, pods: [] };
  const w = toManagerWorkload(bare, []);
  assert.equal(w.ports, [{ name: 'http', appPort: 8080, agentPort: 0, protocol: 'TCP', servicePorts: [] }]);
  assert.is(w.mechanism, '', 'no mechanism shown for a workload without the agent');
});

test.run();
