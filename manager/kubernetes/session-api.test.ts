// The session API over real HTTPS with real client certificates (made with openssl): only the front proxy
// the API server uses — a client certificate signed by the requestheader CA, with an allowed name — gets an
// identity token for the user its headers name; anyone else is refused, and the webhook on the same
// server keeps answering callers without a certificate.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SESSION_API_VERSION, sessionApiGroup } from '../../kube/annotations.js';
import { createLogger } from '../../logging/logger.js';
import { httpsRequest } from '../../testbed/https.js';
import { testPki } from '../../testbed/pki.js';
import { CredentialAuthority } from '../credentials.js';
import { kubeManagerConfigFromEnv } from './manager-config.js';
import {
  frontProxyProblem,
  handleSessionApi,
  identityFromHeaders,
  parseRequestHeaderConfig,
  type RequestHeaderConfig,
} from './session-api.js';
import { startWebhookServer, WEBHOOK_PATH, type WebhookServer } from './webhook-server.js';

const pki = testPki('tp-session-api-test');
const { ca, cert, file, read } = pki;
ca('serving-ca');
ca('front-proxy-ca');
ca('rogue-ca');
cert('tls', 'serving-ca', 'traffic-manager-webhook', 'subjectAltName=IP:127.0.0.1');
cert('proxy', 'front-proxy-ca', 'front-proxy-client', 'extendedKeyUsage=clientAuth');
cert('rogue', 'rogue-ca', 'front-proxy-client', 'extendedKeyUsage=clientAuth');
cert('other-name', 'front-proxy-ca', 'someone-else', 'extendedKeyUsage=clientAuth');
cert('server-only', 'front-proxy-ca', 'front-proxy-client', 'extendedKeyUsage=serverAuth');

const GROUP = sessionApiGroup('tp-system');
const TOKENS = `/apis/${GROUP}/${SESSION_API_VERSION}/sessiontokens`;

const requestHeader: RequestHeaderConfig = parseRequestHeaderConfig({
  'requestheader-client-ca-file': read('front-proxy-ca.crt').toString(),
  'requestheader-allowed-names': '["front-proxy-client"]',
  'requestheader-username-headers': '["X-Remote-User"]',
  'requestheader-group-headers': '["X-Remote-Group"]',
  'requestheader-extra-headers-prefix': '["X-Remote-Extra-"]',
})!;

// The webhook's configuration is the chart's default; no scenario here injects a pod.
const config = kubeManagerConfigFromEnv({ TP_MANAGER_NAMESPACE: 'tp-system' }).injection;

const credentials = new CredentialAuthority();
const events: string[] = [];
let server: WebhookServer;

test.before(async () => {
  server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    certFile: file('tls.crt'),
    keyFile: file('tls.key'),
    config,
    owners: { resolveOwner: async () => undefined },
    log: createLogger('test'),
    sessionApi: {
      clientCa: () => requestHeader.clientCa,
      handle: (req, res) =>
        handleSessionApi(req, res, {
          group: GROUP,
          config: () => requestHeader,
          credentials,
          onEvent: (e) => events.push(e.issued ? `issued ${e.issued.user}` : `refused ${e.refused}`),
        }),
    },
  });
});

test.after(async () => {
  await server.close();
  pki.remove();
});

function request(
  method: string,
  urlPath: string,
  o: { client?: string; headers?: Record<string, string | string[]>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return httpsRequest(
    {
      host: '127.0.0.1',
      port: server.address.port,
      path: urlPath,
      method,
      ca: read('serving-ca.crt'),
      headers: { 'content-type': 'application/json', ...o.headers },
      ...(o.client ? { cert: read(`${o.client}.crt`), key: read(`${o.client}.key`) } : {}),
      agent: false,
    },
    o.body ?? '{}',
  );
}

const asAlice = {
  'X-Remote-User': 'alice',
  'X-Remote-Group': ['developers', 'system:authenticated'],
  'X-Remote-Extra-Scopes%2Fread': 'all',
};

test('the front proxy gets an identity token for the user it names; the token proves exactly that user', async () => {
  const r = await request('POST', TOKENS, { client: 'proxy', headers: asAlice });
  assert.is(r.status, 201, r.body);
  const body = JSON.parse(r.body) as { kind: string; status: { token: string; user: string } };
  assert.is(body.kind, 'SessionToken');
  assert.is(body.status.user, 'alice');
  const v = credentials.verifyIdentity(body.status.token);
  assert.equal(v, {
    ok: true,
    value: {
      user: 'alice',
      uid: '',
      groups: ['developers', 'system:authenticated'],
      extra: { 'scopes/read': ['all'] },
    },
  });
});

test('anyone else is refused: no certificate, another CA, another name, a certificate not for clients', async () => {
  for (const [client, reason] of [
    [undefined, 'no client certificate signed by the requestheader CA'],
    ['rogue', 'no client certificate signed by the requestheader CA'],
    ['other-name', 'is not an allowed front proxy'],
    ['server-only', 'INVALID_PURPOSE'],
  ] as const) {
    const r = await request('POST', TOKENS, { client, headers: asAlice });
    assert.is(r.status, 401, `${client}: ${r.body}`);
    assert.match(JSON.parse(r.body).message as string, reason, `${client}: ${r.body}`);
  }
  assert.ok(events.filter((e) => e.startsWith('refused')).length >= 4);
});

test('the front proxy naming no user gets nothing; only POST creates', async () => {
  const r = await request('POST', TOKENS, { client: 'proxy' });
  assert.is(r.status, 401);
  assert.match(r.body, 'the front proxy named no user');
  assert.is((await request('GET', TOKENS, { client: 'proxy', headers: asAlice })).status, 405);
});

test("the aggregator's discovery: the resource list at /apis/<group>/<version>, 404 for /discovery/v2", async () => {
  const list = await request('GET', `/apis/${GROUP}/${SESSION_API_VERSION}`, { client: 'proxy' });
  assert.is(list.status, 200);
  const parsed = JSON.parse(list.body) as {
    groupVersion: string;
    resources: { name: string; verbs: string[] }[];
  };
  assert.is(parsed.groupVersion, `${GROUP}/v1alpha1`);
  assert.equal(
    parsed.resources.map((x) => [x.name, x.verbs]),
    [['sessiontokens', ['create']]],
  );
  assert.is((await request('GET', '/discovery/v2', { client: 'proxy' })).status, 404);
});

test('the webhook on the same server still answers callers without a client certificate', async () => {
  const r = await request('POST', WEBHOOK_PATH, {
    body: JSON.stringify({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: { uid: 'u1' },
    }),
  });
  assert.is(r.status, 200, r.body);
  assert.match(r.body, '"allowed":true');
});

test('parsing the ConfigMap and the headers (pure)', () => {
  assert.is(parseRequestHeaderConfig({}), undefined, 'no CA: aggregation not configured');
  const defaults = parseRequestHeaderConfig({
    'requestheader-client-ca-file': '-----BEGIN CERTIFICATE-----',
  })!;
  assert.equal(defaults.usernameHeaders, ['X-Remote-User']);
  assert.equal(defaults.allowedNames, []);
  const id = identityFromHeaders(
    { 'x-remote-user': ['', 'bob'], 'x-remote-group': ['a', 'b'], 'x-remote-uid': ['42'], host: ['x'] },
    defaults,
  );
  assert.equal(id, { user: 'bob', uid: '42', groups: ['a', 'b'], extra: {} });
  assert.is(identityFromHeaders({ 'x-remote-group': ['a'] }, defaults), undefined);
  const peer = { authorized: true, commonName: 'anything', clientAuth: true };
  assert.is(frontProxyProblem(peer, defaults), undefined, 'no allowed names: any name the CA signed');
  assert.match(
    frontProxyProblem({ ...peer, clientAuth: false }, defaults) ?? '',
    'not for client authentication',
  );
});

test.run();
