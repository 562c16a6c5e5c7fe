// `tp describe`'s view of an injected pod's probes: read back from what the webhook recorded, shown
// beside the capture.
import type { V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { podProbes, renderDescription } from './describe.js';

/** An injected pod as the webhook leaves it (manager/kubernetes/testdata/injection/probes-*.golden.yaml), trimmed. */
function injected(rewritten: string, notRewritten?: string): V1Pod {
  const annotations: Record<string, string> = { 'tp.dev/probes-rewritten': rewritten };
  if (notRewritten) annotations['tp.dev/probes-not-rewritten'] = notRewritten;
  return {
    metadata: { name: 'api-0', annotations },
    spec: {
      containers: [
        { name: 'api', image: 'lab/echo' },
        { name: 'tp-agent', image: 'tp/tp', env: [{ name: 'TP_PROBE_PORT', value: '15021' }] },
      ],
    },
  };
}

test('the probes of an injected pod, as the webhook recorded them', () => {
  const probes = podProbes(
    injected(
      'other/readiness',
      'app/liveness: host db.internal is not this pod, so the probe never reaches the capture; ' +
        'other/startup: port 9100 is not captured, so the probe reaches the app directly',
    ),
  );
  assert.equal(probes, {
    port: 15021,
    rewritten: ['other/readiness'],
    notRewritten: [
      'app/liveness: host db.internal is not this pod, so the probe never reaches the capture',
      'other/startup: port 9100 is not captured, so the probe reaches the app directly',
    ],
  });
  assert.equal(podProbes(undefined), { port: 0, rewritten: [], notRewritten: [] });
});

test('tp describe shows them under the pod', () => {
  const probes = podProbes(injected('api/readiness,api/liveness,api/startup,worker/readiness'));
  const text = renderDescription({
    workload: {
      kind: 'Deployment',
      name: 'api',
      namespace: 'default',
      uid: 'u',
      replicas: 1,
      readyReplicas: 1,
      agentRequested: true,
      rollout: '',
      mechanism: 'iptables',
      agentState: 'INSTALLED',
      agentMessage: '',
      ports: [],
      pods: [],
      labels: {},
    },
    services: [],
    pods: [
      {
        pod: {
          name: 'api-0',
          ip: '10.88.0.10',
          phase: 'Running',
          ready: true,
          terminating: false,
          requested: true,
          hasAgent: true,
          agentReady: true,
          hasInit: true,
          notInjected: '',
          capturedPorts: '50051:15001,8080:15001,7070:15001',
          mechanism: 'iptables',
          failure: '',
          rollout: '',
        },
        initArgs: [],
        initLog: '',
        probes,
        agentCounters: {
          ports: [{ appPort: 8080, passedThrough: 12, intercepted: 3, dialFailures: 0, direct: 2 }],
          probes: [{ probe: 'api/readiness', performed: 40, failed: 2 }],
          reportedUnixMs: 1,
        },
      },
    ],
  });
  assert.match(
    text,
    '      counters:  app port 8080: 12 passed through, 3 intercepted, 0 dial failures; probes: api/readiness 40 (2 failed)',
  );
  assert.match(
    text,
    '      probes:    api/readiness, api/liveness, api/startup, worker/readiness -> agent probe port 15021',
  );
  assert.not.match(text, 'probe left as written');
});

test.run();
