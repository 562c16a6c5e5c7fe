import type { V1Pod, V1Volume } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatMap, parseQuantity } from './downward-api.js';
import { type ProjectionContext, projectVolume, requiredTokens, tokenKey, VolumeError } from './volumes.js';

const pod: V1Pod = {
  metadata: { name: 'p', namespace: 'ns', uid: 'u', labels: { b: '2', a: 'say "hi"' } },
  spec: { containers: [{ name: 'c', resources: { requests: { memory: '64Mi' } } }] },
};
const ctx = (): ProjectionContext => ({
  facts: {
    pod,
    podIP: undefined,
    hostIP: '172.30.0.1',
    nodeName: 'n',
    nodeAllocatable: { cpu: '2', memory: '1Gi' },
  },
  objects: {
    configMaps: new Map<
      string,
      { data?: Record<string, string>; binaryData?: Record<string, string> } | null
    >([
      ['kube-root-ca.crt', { data: { 'ca.crt': 'CA PEM' } }],
      [
        'coredns',
        {
          data: { Corefile: '.:53 {}', other: 'x' },
          binaryData: { bin: Buffer.from([0, 1]).toString('base64') },
        },
      ],
    ]),
    secrets: new Map([['tls', { data: { 'tls.key': Buffer.from('KEY').toString('base64') } }]]),
  },
  tokens: new Map([[tokenKey({ audience: '', expirationSeconds: 3607 }), 'jwt-token']]),
});
const files = (v: V1Volume) => {
  const content = projectVolume(v, ctx());
  if (content.kind !== 'files') throw new Error(`expected files, got ${content.kind}`);
  return Object.fromEntries(
    content.files.map((f) => [f.path, { text: f.data.toString(), mode: f.mode.toString(8) }]),
  );
};

test('the service-account volume the admission plugin injects: token, ca.crt, namespace', () => {
  const volume: V1Volume = {
    name: 'kube-api-access-x',
    projected: {
      defaultMode: 0o644,
      sources: [
        { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        { downwardAPI: { items: [{ path: 'namespace', fieldRef: { fieldPath: 'metadata.namespace' } }] } },
      ],
    },
  };
  assert.equal(files(volume), {
    token: { text: 'jwt-token', mode: '644' },
    'ca.crt': { text: 'CA PEM', mode: '644' },
    namespace: { text: 'ns', mode: '644' },
  });
  assert.equal(requiredTokens({ spec: { containers: [], volumes: [volume] } }), [
    { audience: '', expirationSeconds: 3607 },
  ]);
});

test('configMap: all keys (binaryData too) or the listed items with their modes', () => {
  assert.equal(Object.keys(files({ name: 'v', configMap: { name: 'coredns' } })).sort(), [
    'Corefile',
    'bin',
    'other',
  ]);
  assert.equal(
    files({
      name: 'v',
      configMap: { name: 'coredns', items: [{ key: 'Corefile', path: 'conf/Corefile', mode: 0o600 }] },
    }),
    {
      'conf/Corefile': { text: '.:53 {}', mode: '600' },
    },
  );
  assert.throws(
    () =>
      projectVolume(
        { name: 'v', configMap: { name: 'coredns', items: [{ key: 'nope', path: 'x' }] } },
        ctx(),
      ),
    /has no key "nope"/,
  );
  assert.throws(
    () => projectVolume({ name: 'v', configMap: { name: 'absent' } }, ctx()),
    (e: unknown) => e instanceof VolumeError,
  );
  assert.equal(projectVolume({ name: 'v', configMap: { name: 'absent', optional: true } }, ctx()), {
    kind: 'files',
    files: [],
  });
  assert.throws(
    () =>
      projectVolume(
        { name: 'v', configMap: { name: 'coredns', items: [{ key: 'other', path: '../escape' }] } },
        ctx(),
      ),
    /invalid path/,
  );
});

test('secret volumes decode base64; downwardAPI renders labels like the kubelet', () => {
  assert.equal(files({ name: 'v', secret: { secretName: 'tls', defaultMode: 0o400 } }), {
    'tls.key': { text: 'KEY', mode: '400' },
  });
  const d = files({
    name: 'v',
    downwardAPI: {
      items: [
        { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
        {
          path: 'mem',
          resourceFieldRef: { containerName: 'c', resource: 'requests.memory', divisor: '1Mi' },
        },
      ],
    },
  });
  assert.is(d.labels!.text, 'a="say \\"hi\\""\nb="2"');
  assert.is(d.mem!.text, '64');
  assert.throws(
    () =>
      projectVolume(
        { name: 'v', downwardAPI: { items: [{ path: 'ip', fieldRef: { fieldPath: 'status.podIP' } }] } },
        ctx(),
      ),
    /not supported in volumes/,
  );
});

test('emptyDir and hostPath are directories; other volume types are refused with the supported list', () => {
  assert.equal(projectVolume({ name: 'v', emptyDir: {} }, ctx()), { kind: 'emptyDir' });
  assert.equal(projectVolume({ name: 'v', hostPath: { path: '/tmp', type: 'Directory' } }, ctx()), {
    kind: 'hostPath',
    path: '/tmp',
    type: 'Directory',
  });
  assert.throws(
    () => projectVolume({ name: 'v', persistentVolumeClaim: { claimName: 'c' } }, ctx()),
    /persistentVolumeClaim volumes are not supported by the lab \(use configMap/,
  );
});

test('quantities and the labels format', () => {
  assert.is(parseQuantity('250m'), 0.25);
  assert.is(parseQuantity('128Mi'), 128 * 2 ** 20);
  assert.is(parseQuantity('1e3'), 1000);
  assert.is(parseQuantity('2'), 2);
  assert.throws(() => parseQuantity('12 apples'), /invalid quantity/);
  assert.is(formatMap({ z: '1', a: '2' }), 'a="2"\nz="1"');
});

test.run();
