import type { V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type ContainerView,
  computePodStatus,
  type PodView,
  podPhase,
  type TerminatedState,
} from './pod-status.js';

const T0 = '2026-01-01T00:00:00Z';
const NOW = '2026-01-01T00:01:00Z';
const pod = (restartPolicy = 'Always', init = 0): V1Pod => ({
  metadata: { name: 'p', namespace: 'ns', generation: 1 },
  spec: {
    restartPolicy,
    initContainers: Array.from({ length: init }, (_, i) => ({ name: `init-${i}` })),
    containers: [{ name: 'app' }],
  },
  status: {
    phase: 'Pending',
    conditions: [{ type: 'PodScheduled', status: 'True', lastTransitionTime: T0 as unknown as Date }],
  },
});
const term = (exitCode: number): TerminatedState => ({
  exitCode,
  reason: exitCode === 0 ? 'Completed' : 'Error',
  startedAt: T0,
  finishedAt: T0,
  containerId: 'lab://1',
});
const c = (
  name: string,
  state: ContainerView['state'],
  extra: Partial<ContainerView> = {},
): ContainerView => ({
  name,
  image: 'lab/echo',
  imageId: 'lab/echo@sha256:x',
  state,
  restartCount: 0,
  ready: false,
  started: state.kind === 'running',
  restartable: false,
  ...extra,
});
const view = (
  containers: ContainerView[],
  initContainers: ContainerView[] = [],
  extra: Partial<PodView> = {},
): PodView => ({
  sandboxReady: true,
  podIP: '10.244.0.5',
  hostIP: '172.30.0.1',
  startTime: T0,
  initContainers,
  containers,
  terminal: false,
  ...extra,
});
interface Cond {
  type: string;
  status: string;
  reason: string | null;
  message: string | null;
  lastTransitionTime: string;
}
interface StatusJson {
  phase: string;
  podIP: string;
  podIPs: { ip: string }[];
  hostIP: string;
  observedGeneration: number;
  conditions: Cond[];
  containerStatuses: {
    state: unknown;
    lastState: { terminated?: { exitCode: number } };
    ready: boolean;
    started: boolean;
    restartCount: number;
    containerID: string;
    imageID: string;
  }[];
}
const statusOf = (p: V1Pod, v: PodView, now = NOW) => computePodStatus(p, v, now) as unknown as StatusJson;
const running = { kind: 'running' as const, startedAt: T0, containerId: 'lab://1' };
const waiting = (reason: string) => ({ kind: 'waiting' as const, reason });

test('phase follows the kubelet: Pending, Running, Succeeded, Failed by restart policy', () => {
  assert.is(podPhase(pod(), view([c('app', waiting('ContainerCreating'))])), 'Pending');
  assert.is(podPhase(pod(), view([c('app', running)])), 'Running');
  // Crash-looping under Always is still Running.
  assert.is(
    podPhase(pod(), view([c('app', waiting('CrashLoopBackOff'), { lastTermination: term(1) })])),
    'Running',
  );
  assert.is(podPhase(pod('Never'), view([c('app', { kind: 'terminated', ...term(0) })])), 'Succeeded');
  assert.is(podPhase(pod('Never'), view([c('app', { kind: 'terminated', ...term(2) })])), 'Failed');
  assert.is(podPhase(pod('OnFailure'), view([c('app', { kind: 'terminated', ...term(0) })])), 'Succeeded');
  // A pod being deleted is terminal: all containers stopped decides Succeeded or Failed.
  assert.is(
    podPhase(pod(), view([c('app', { kind: 'terminated', ...term(143) })], [], { terminal: true })),
    'Failed',
  );
});

test('init containers: Pending while they run; a failed one fails a Never pod', () => {
  const p = pod('Never', 2);
  const app = c('app', waiting('PodInitializing'));
  assert.is(
    podPhase(p, view([app], [c('init-0', { kind: 'terminated', ...term(0) }), c('init-1', running)])),
    'Pending',
  );
  assert.is(
    podPhase(
      p,
      view([app], [c('init-0', { kind: 'terminated', ...term(1) }), c('init-1', waiting('PodInitializing'))]),
    ),
    'Failed',
  );
  assert.is(
    podPhase(
      pod('Always', 1),
      view([app], [c('init-0', waiting('CrashLoopBackOff'), { lastTermination: term(1) })]),
    ),
    'Pending',
  );
});

test('a running, ready pod: conditions True, statuses as kubectl reads them, PodScheduled kept', () => {
  const status = statusOf(pod(), view([c('app', running, { ready: true })]), NOW);
  assert.is(status.phase, 'Running');
  assert.is(status.podIP, '10.244.0.5');
  assert.equal(status.podIPs, [{ ip: '10.244.0.5' }]);
  assert.is(status.hostIP, '172.30.0.1');
  assert.is(status.observedGeneration, 1);
  const cond = Object.fromEntries(status.conditions.map((x) => [x.type, x.status]));
  assert.equal(cond, {
    PodReadyToStartContainers: 'True',
    Initialized: 'True',
    ContainersReady: 'True',
    Ready: 'True',
    PodScheduled: 'True',
  });
  const cs = status.containerStatuses[0];
  assert.equal(cs.state, { running: { startedAt: T0 } });
  assert.equal(cs.lastState, {});
  assert.is(cs.ready, true);
  assert.is(cs.started, true);
  assert.is(cs.containerID, 'lab://1');
  assert.is(cs.imageID, 'lab/echo@sha256:x');
});

test('not ready: Ready False with the unready containers named; transition times only move on change', () => {
  const first = statusOf(pod(), view([c('app', running)]), NOW);
  const ready = first.conditions.find((x) => x.type === 'Ready')!;
  assert.equal(
    [ready.status, ready.reason, ready.message],
    ['False', 'ContainersNotReady', 'containers with unready status: [app]'],
  );
  const later = { ...pod(), status: { phase: 'Running', conditions: first.conditions } } as unknown as V1Pod;
  const again = statusOf(later, view([c('app', running)]), '2026-01-01T00:05:00Z');
  assert.is(again.conditions.find((x) => x.type === 'Ready')!.lastTransitionTime, NOW);
  const flipped = statusOf(later, view([c('app', running, { ready: true })]), '2026-01-01T00:05:00Z');
  const r = flipped.conditions.find((x) => x.type === 'Ready')!;
  assert.is(r.lastTransitionTime, '2026-01-01T00:05:00Z');
  assert.is(r.reason, null, 'a stale reason is cleared in the strategic merge patch');
});

test('crash loop: waiting CrashLoopBackOff with lastState terminated and the restart count', () => {
  const status = statusOf(
    pod(),
    view([
      c(
        'app',
        { kind: 'waiting', reason: 'CrashLoopBackOff', message: 'back-off 10s' },
        { lastTermination: term(1), restartCount: 2 },
      ),
    ]),
    NOW,
  );
  const cs = status.containerStatuses[0];
  assert.equal(cs.state, { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 10s' } });
  assert.is(cs.lastState.terminated?.exitCode, 1);
  assert.is(cs.restartCount, 2);
});

test('terminal phases are final; a completed pod is not Ready (PodCompleted)', () => {
  const done = { ...pod('Never'), status: { phase: 'Succeeded' } } as V1Pod;
  const status = statusOf(done, view([c('app', waiting('ContainerCreating'))]), NOW);
  assert.is(status.phase, 'Succeeded');
  assert.is(status.conditions.find((x) => x.type === 'Ready')!.reason, 'PodCompleted');
});

test.run();
