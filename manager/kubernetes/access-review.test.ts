// checkAgentClaim: an agent is who its token's pod is, and that pod must serve the workload it claims.
// SubjectAccessReviewer: its answers kept, a denial only briefly (against a plain HTTP server playing the API).
import * as http from 'node:http';
import type * as net from 'node:net';
import type { V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AgentInfo } from '../../rpc/gen/manager.js';
import { loopbackKubeConfig } from '../../testbed/kubeconfig.js';
import {
  checkAgentClaim,
  POD_NAME_EXTRA,
  POD_UID_EXTRA,
  SubjectAccessReviewer,
  type TokenFacts,
} from './access-review.js';
import type { OwnerWorkload } from './injection.js';

const AUD = 'tp-manager.tp-system';

const claim: AgentInfo = {
  name: 'echo',
  namespace: 'a',
  kind: 'Deployment',
  podName: 'echo-7d9-x1',
  podIp: '10.88.0.7',
  version: '0.1.0',
  mechanism: 'iptables',
  containers: [],
  counters: undefined,
  directPort: 0,
};

const token: TokenFacts = {
  authenticated: true,
  error: '',
  user: 'system:serviceaccount:a:default',
  extra: { [POD_NAME_EXTRA]: ['echo-7d9-x1'], [POD_UID_EXTRA]: ['uid-1'] },
};

const pod: V1Pod = {
  metadata: { name: 'echo-7d9-x1', namespace: 'a', uid: 'uid-1' },
  spec: { containers: [], serviceAccountName: 'default' },
  status: { podIP: '10.88.0.7' },
};

const echo: OwnerWorkload = { kind: 'Deployment', name: 'echo' };

test('a token bound to a pod of the claimed workload is accepted, with what the cluster vouches for', () => {
  assert.equal(checkAgentClaim(claim, token, pod, echo, AUD), {
    ok: true,
    value: {
      serviceAccount: 'system:serviceaccount:a:default',
      namespace: 'a',
      podName: 'echo-7d9-x1',
      podUid: 'uid-1',
    },
  });
});

test('refusals, each naming what does not hold', () => {
  const cases: [string, Parameters<typeof checkAgentClaim>, string][] = [
    [
      'a token the API server does not accept for our audience',
      [
        claim,
        { ...token, authenticated: false, error: 'token audiences ["api"] is invalid' },
        pod,
        echo,
        AUD,
      ],
      'its token is not valid for audience tp-manager.tp-system (token audiences ["api"] is invalid)',
    ],
    [
      'a user, not a ServiceAccount',
      [claim, { ...token, user: 'alice' }, pod, echo, AUD],
      "not a ServiceAccount's",
    ],
    [
      'a token not bound to a pod (kubectl create token without --bound-object-kind Pod)',
      [claim, { ...token, extra: {} }, pod, echo, AUD],
      'not bound to a pod',
    ],
    [
      'a token of another namespace',
      [claim, { ...token, user: 'system:serviceaccount:b:default' }, pod, echo, AUD],
      'belongs to namespace b, not a',
    ],
    [
      "another pod's token",
      [
        claim,
        { ...token, extra: { [POD_NAME_EXTRA]: ['other-1'], [POD_UID_EXTRA]: ['u'] } },
        undefined,
        undefined,
        AUD,
      ],
      'belongs to pod other-1, not echo-7d9-x1',
    ],
    ['a pod that is gone', [claim, token, undefined, undefined, AUD], 'no longer exists'],
    [
      'a pod of the same name, recreated',
      [claim, token, { ...pod, metadata: { ...pod.metadata, uid: 'uid-2' } }, echo, AUD],
      'no longer exists',
    ],
    [
      'the pod runs as another ServiceAccount',
      [claim, token, { ...pod, spec: { containers: [], serviceAccountName: 'builder' } }, echo, AUD],
      'runs as ServiceAccount builder, not default',
    ],
    ['a bare pod', [claim, token, pod, undefined, AUD], 'no owning Deployment'],
    [
      "a pod of another workload (the agent claims echo, its token is db's pod)",
      [claim, token, pod, { kind: 'Deployment', name: 'db' }, AUD],
      'pod echo-7d9-x1 belongs to Deployment db, not Deployment echo',
    ],
    [
      'the claimed kind differs',
      [claim, token, pod, { kind: 'StatefulSet', name: 'echo' }, AUD],
      'belongs to StatefulSet echo, not Deployment echo',
    ],
    [
      'another pod IP',
      [{ ...claim, podIp: '10.88.0.99' }, token, pod, echo, AUD],
      'has IP 10.88.0.7, not 10.88.0.99',
    ],
  ];
  for (const [what, args, reason] of cases) {
    const v = checkAgentClaim(...args);
    assert.is(v.ok, false, what);
    if (!v.ok) assert.match(v.reason, reason, what);
  }
});

test('an allowed answer is kept 10 s, a denial 1 s (a restarted API server denies for a moment)', async () => {
  let allowed = false;
  let reviews = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      reviews++;
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {},
          status: { allowed },
        }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const kc = loopbackKubeConfig((server.address() as net.AddressInfo).port);
    let now = 0;
    const reviewer = new SubjectAccessReviewer(kc, () => now);
    const alice = { user: 'alice', uid: '', groups: [], extra: {} };
    const check = {
      verb: 'create',
      group: '',
      resource: 'pods',
      subresource: 'portforward',
      namespace: 'dev',
    };
    assert.is(await reviewer.allowed(alice, check), false);
    now = 500;
    assert.is(await reviewer.allowed(alice, check), false);
    assert.is(reviews, 1, 'the denial is kept for a moment');
    allowed = true;
    now = 1_600;
    assert.is(await reviewer.allowed(alice, check), true, 'asked again after 1 s');
    assert.is(reviews, 2);
    allowed = false;
    now = 11_000;
    assert.is(await reviewer.allowed(alice, check), true, 'an allowed answer is kept 10 s');
    assert.is(reviews, 2);
  } finally {
    server.close();
  }
});

test.run();
