// The webhook server over real HTTPS (a CA and a serving certificate made with openssl, verified by
// the client as the API server would): the answers the API server gets for the pods it sends.
import type { V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../../logging/logger.js';
import { httpsRequest } from '../../testbed/https.js';
import { testPki } from '../../testbed/pki.js';
import { applyJsonPatch, type InjectionConfig, type JsonPatchOperation } from './injection.js';
import {
  type OwnerResolver,
  startWebhookServer,
  WEBHOOK_PATH,
  type WebhookServer,
} from './webhook-server.js';

const pki = testPki('tp-webhook-test');
pki.ca('ca');
pki.cert('tls', 'ca', 'traffic-manager', 'subjectAltName=DNS:traffic-manager.tp-system.svc,IP:127.0.0.1');
const ca = pki.read('ca.crt');

const config: InjectionConfig = {
  version: '0.1.0',
  agentImage: 'tp/tp',
  initImage: 'tp/tp',
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
};

const lookups: string[] = [];
const owners: OwnerResolver = {
  async resolveOwner(namespace, refs) {
    const rs = refs?.find((r) => r.controller && r.kind === 'ReplicaSet');
    lookups.push(`${namespace}/${rs?.name ?? '-'}`);
    return rs ? { kind: 'Deployment', name: rs.name.replace(/-[a-z0-9]+$/, '') } : undefined;
  },
};

let server: WebhookServer;
const decisions: string[] = [];

function post(body: string, urlPath = WEBHOOK_PATH): Promise<{ status: number; body: string }> {
  return httpsRequest(
    { host: '127.0.0.1', port: server.address.port, path: urlPath, method: 'POST', ca },
    body,
  );
}

function review(pod: V1Pod, operation = 'CREATE') {
  return JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'e911857d-c318-11e8-bbad-025000000001',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      namespace: 'default',
      operation,
      object: pod,
    },
  });
}

const echoPod: V1Pod = {
  metadata: {
    generateName: 'echo-5f7b9-',
    annotations: { 'tp.dev/inject-agent': 'enabled' },
    ownerReferences: [
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'echo-5f7b9', uid: 'u', controller: true },
    ],
  },
  spec: { containers: [{ name: 'echo', image: 'lab/echo', ports: [{ containerPort: 8080 }] }] },
};

test.before(async () => {
  server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    certFile: pki.file('tls.crt'),
    keyFile: pki.file('tls.key'),
    config,
    owners,
    log: createLogger('webhook-test'),
    onDecision: (d) => decisions.push(`${d.plan.action} ${d.podName}`),
  });
});

test.after(async () => {
  await server?.close();
  pki.remove();
});

test('a pod asking for the agent gets the init container and the sidecar', async () => {
  const res = await post(review(echoPod));
  assert.is(res.status, 200);
  const answer = JSON.parse(res.body);
  assert.is(answer.kind, 'AdmissionReview');
  assert.is(answer.response.uid, 'e911857d-c318-11e8-bbad-025000000001');
  assert.is(answer.response.allowed, true);
  assert.is(answer.response.patchType, 'JSONPatch');
  const patch = JSON.parse(Buffer.from(answer.response.patch, 'base64').toString()) as JsonPatchOperation[];
  const pod = applyJsonPatch(echoPod, patch);
  assert.equal(
    pod.spec!.containers.map((c) => c.name),
    ['echo', 'tp-agent'],
  );
  assert.equal(
    pod.spec!.initContainers!.map((c) => c.name),
    ['tp-init'],
  );
  const workload = pod.spec!.containers[1]!.env!.find((e) => e.name === 'TP_WORKLOAD_NAME');
  assert.is(workload!.value, 'echo');
  assert.ok(decisions.includes('inject echo-5f7b9-*'));
});

test('other pods and other operations pass untouched, without an owner lookup', async () => {
  const before = lookups.length;
  const plain = { ...echoPod, metadata: { ...echoPod.metadata, annotations: {} } };
  for (const body of [review(plain), review(echoPod, 'UPDATE')]) {
    const answer = JSON.parse((await post(body)).body);
    assert.is(answer.response.allowed, true);
    assert.is(answer.response.patch, undefined);
  }
  assert.is(lookups.length, before);
});

test('a bare pod is allowed, with a warning and the reason recorded on it', async () => {
  const bare: V1Pod = {
    ...echoPod,
    metadata: { name: 'lonely', annotations: { 'tp.dev/inject-agent': 'enabled' } },
  };
  const answer = JSON.parse((await post(review(bare))).body);
  assert.is(answer.response.allowed, true);
  assert.match(answer.response.warnings[0], /agent not injected: the pod has no owning/);
  const patch = JSON.parse(Buffer.from(answer.response.patch, 'base64').toString()) as JsonPatchOperation[];
  const pod = applyJsonPatch(bare, patch);
  assert.equal(pod.spec, bare.spec);
  assert.match(pod.metadata!.annotations!['tp.dev/not-injected']!, /no owning/);
});

test('bad requests get clear HTTP errors; the health endpoint answers', async () => {
  assert.is((await post('{not json')).status, 400);
  assert.is((await post('{}', '/elsewhere')).status, 404);
  assert.is((await post('{}')).status, 400);
  const health = await httpsRequest({
    host: '127.0.0.1',
    port: server.address.port,
    path: '/healthz',
    method: 'GET',
    ca,
  });
  assert.is(health.status, 200);
});

test('the client refuses a certificate it does not trust (what a wrong caBundle looks like)', async () => {
  const err = await httpsRequest({ host: '127.0.0.1', port: server.address.port, path: '/healthz' }).then(
    () => undefined,
    (e: Error) => e,
  );
  assert.ok(err, 'expected a TLS verification error');
});

test.run();
