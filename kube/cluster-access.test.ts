// The user's access as the root daemon gets it, against a real HTTPS server on loopback that checks what
// an API server checks: its own certificate verified against the kubeconfig's CA, the client certificate
// or the bearer token. The kubeconfigs name files and an exec plugin; what reaches the root daemon must
// name neither, and work.
import * as fs from 'node:fs';
import * as https from 'node:https';
import type * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testPki } from '../testbed/pki.js';
import { exportClusterAccess, importClusterAccess } from './cluster-access.js';
import { loadKubeConfig } from './kubeconfig.js';
import { readyPodBehindService } from './port-forward.js';

const pki = testPki('tp-cluster-access-test');
pki.ca('ca');
pki.cert('server', 'ca', 'kube-apiserver', 'subjectAltName=IP:127.0.0.1');
pki.cert('client', 'ca', 'developer');
const { file, dir } = pki;
const EXEC_TOKEN = 'token-from-the-exec-plugin';

/** What an API server checks, and the two objects readyPodBehindService reads; `prefix`: the server URL's path. */
async function apiServer(prefix = ''): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server = https.createServer(
    {
      key: fs.readFileSync(file('server.key')),
      cert: fs.readFileSync(file('server.crt')),
      ca: fs.readFileSync(file('ca.crt')),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      requests.push(req.url ?? '');
      const socket = req.socket as net.Socket & { authorized?: boolean };
      const who = socket.authorized
        ? 'certificate'
        : req.headers.authorization === `Bearer ${EXEC_TOKEN}`
          ? 'token'
          : undefined;
      const reply = (code: number, body: unknown) =>
        res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (!who) return reply(401, { kind: 'Status', message: 'Unauthorized' });
      const ns = `${prefix}/api/v1/namespaces/tp-system`;
      if (req.url === `${ns}/services/traffic-manager`)
        return reply(200, {
          spec: {
            selector: { app: 'traffic-manager' },
            ports: [{ name: 'grpc', port: 8081, targetPort: 'grpc' }],
          },
        });
      if (req.url === `${ns}/pods?labelSelector=${encodeURIComponent('app=traffic-manager')}`)
        return reply(200, {
          items: [
            {
              metadata: { name: 'traffic-manager-1' },
              spec: { containers: [{ name: 'manager', ports: [{ name: 'grpc', containerPort: 8081 }] }] },
              status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
            },
          ],
        });
      // A manager not ready yet: the Service, and its pod still pending.
      if (req.url === `${prefix}/api/v1/namespaces/starting/services/traffic-manager`)
        return reply(200, {
          spec: { selector: { app: 'traffic-manager' }, ports: [{ name: 'grpc', port: 8081 }] },
        });
      if (req.url?.startsWith(`${prefix}/api/v1/namespaces/starting/pods?`))
        return reply(200, {
          items: [{ metadata: { name: 'traffic-manager-2' }, status: { phase: 'Pending' } }],
        });
      if (req.url?.startsWith(`${prefix}/api/v1/namespaces/elsewhere/`))
        return reply(403, { kind: 'Status', message: `services is forbidden: User "${who}" cannot get` });
      return reply(404, { kind: 'Status', message: 'not found' });
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}${prefix}`,
    requests,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

function kubeconfigFile(name: string, server: string, user: object): string {
  const p = file(name);
  fs.writeFileSync(
    p,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'lab', cluster: { server, 'certificate-authority': file('ca.crt') } }],
      users: [{ name: 'me', user }],
      contexts: [{ name: 'lab', context: { cluster: 'lab', user: 'me' } }],
      'current-context': 'lab',
    }),
  );
  return p;
}

test('a client certificate in files: the access carries the certificates, no path, and reaches the API server', async () => {
  const api = await apiServer();
  try {
    const { kc } = loadKubeConfig({
      kubeconfig: kubeconfigFile('cert.json', api.url, {
        'client-certificate': file('client.crt'),
        'client-key': file('client.key'),
      }),
    });
    const access = await exportClusterAccess(kc);
    assert.not.ok(access.includes(dir), 'no file path goes to the root daemon');
    const doc = JSON.parse(access) as Record<string, string>;
    assert.is(Buffer.from(doc.certData!, 'base64').toString(), fs.readFileSync(file('client.crt'), 'utf8'));
    assert.is(doc.token, undefined);
    // The root daemon's side: verified against the CA, authenticated by the certificate.
    assert.equal(
      await readyPodBehindService(importClusterAccess(access), 'tp-system', 'traffic-manager', 'grpc'),
      {
        pod: 'traffic-manager-1',
        port: 8081,
      },
    );
  } finally {
    await api.close();
  }
});

test('an exec plugin runs once, as the user daemon: the root daemon gets its token, not the command', async () => {
  const api = await apiServer('/k8s/clusters/c-1');
  const runs = file('exec-runs');
  const plugin = file('plugin.sh');
  fs.writeFileSync(
    plugin,
    `#!/bin/sh\necho run >> ${runs}\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"${EXEC_TOKEN}","expirationTimestamp":"${new Date(Date.now() + 3_600_000).toISOString()}"}}'\n`,
    { mode: 0o755 },
  );
  try {
    const { kc } = loadKubeConfig({
      kubeconfig: kubeconfigFile('exec.json', api.url, {
        exec: { apiVersion: 'client.authentication.k8s.io/v1', command: plugin, interactiveMode: 'Never' },
      }),
    });
    const access = await exportClusterAccess(kc);
    assert.not.ok(access.includes('plugin.sh'), 'the exec plugin never runs in the root daemon');
    assert.is((JSON.parse(access) as { token: string }).token, EXEC_TOKEN);
    const root = importClusterAccess(access);
    // A server URL with a path (a proxy in front of the API server): the requests go under it.
    assert.equal(await readyPodBehindService(root, 'tp-system', 'traffic-manager', 'grpc'), {
      pod: 'traffic-manager-1',
      port: 8081,
    });
    assert.ok(
      api.requests.every((r) => r.startsWith('/k8s/clusters/c-1/api/v1/')),
      api.requests.join(' '),
    );
    // Asked again (the user daemon checks for a renewal every minute): the token cached until it expires,
    // no second run.
    assert.is(await exportClusterAccess(kc), access);
    assert.is(fs.readFileSync(runs, 'utf8'), 'run\n');
    // What can be wrong with the manager is named, with the fix.
    const failure = (namespace: string) =>
      readyPodBehindService(root, namespace, 'traffic-manager', 'grpc').then(
        () => assert.unreachable(`the manager in ${namespace} was found`),
        (e: Error) => e.message,
      );
    assert.is(
      await failure('elsewhere'),
      'cannot read Service elsewhere/traffic-manager: services is forbidden: User "token" cannot get',
    );
    assert.is(
      await failure('nowhere'),
      'no traffic manager in namespace nowhere (Service traffic-manager not found): install it with tp helm install (or pass --manager-namespace NS if it runs elsewhere)',
    );
    assert.is(
      await failure('starting'),
      'the traffic manager in namespace starting has no ready pod (pods: traffic-manager-2 Pending): see kubectl get pods -n starting',
    );
  } finally {
    await api.close();
  }
});

test('an access the root daemon cannot use is refused with what is wrong', () => {
  const cases: [string, string][] = [
    ['{', 'the cluster access is not JSON'],
    ['{}', 'the cluster access names no API server'],
    ['{"server":"not a url"}', 'API server "not a url" is not a URL'],
    ['{"server":"ftp://x"}', 'API server "ftp://x" is not an http(s) URL'],
    ['{"server":"https://x","token":7}', "the cluster access's token is not a string"],
  ];
  for (const [text, message] of cases)
    assert.throws(() => importClusterAccess(text), new RegExp(message.replace(/[()]/g, '\\$&')));
});

test.after(() => pki.remove());

test.run();
