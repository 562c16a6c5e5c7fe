import type { V1Container, V1Pod, V1Service } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { PodFacts } from './downward-api.js';
import {
  ContainerConfigError,
  containerEnv,
  expandCommand,
  expandVars,
  type FetchedObjects,
  processEnvironment,
  referencedObjects,
  serviceEnv,
} from './env.js';

const pod: V1Pod = {
  metadata: {
    name: 'echo-1',
    namespace: 'shop',
    uid: 'u-1',
    labels: { app: 'echo' },
    annotations: { a: 'b' },
  },
  spec: {
    nodeName: 'tplab-node',
    serviceAccountName: 'echo-sa',
    containers: [{ name: 'c', resources: { limits: { memory: '128Mi' }, requests: { cpu: '250m' } } }],
  },
};
const facts: PodFacts = {
  pod,
  podIP: '10.244.0.7',
  hostIP: '172.30.0.1',
  nodeName: 'tplab-node',
  nodeAllocatable: { cpu: '2', memory: '4Gi' },
};
const svc = (
  namespace: string,
  name: string,
  clusterIP: string,
  ports: { name?: string; port: number; protocol?: string }[],
): V1Service => ({
  metadata: { namespace, name },
  spec: { clusterIP, ports },
});
const services = [
  svc('default', 'kubernetes', '10.96.0.1', [{ name: 'https', port: 443, protocol: 'TCP' }]),
  svc('default', 'other', '10.96.0.9', [{ port: 80 }]),
  svc('shop', 'echo-svc', '10.96.3.4', [
    { name: 'http', port: 80 },
    { port: 53, protocol: 'UDP' },
  ]),
  svc('shop', 'headless', 'None', [{ port: 80 }]),
];
const objects = (): FetchedObjects => ({
  configMaps: new Map([
    ['settings', { data: { MODE: 'fast', 'bad key': 'x', LEVEL: '3' } }],
    ['missing', null],
  ]),
  secrets: new Map([['creds', { data: { PASSWORD: Buffer.from('s3cret').toString('base64') } }]]),
});
const asMap = (vars: { name: string; value: string }[]) =>
  Object.fromEntries(vars.map((v) => [v.name, v.value]));

test('downward API fields, configMap and secret keys, envFrom with prefix, $(VAR) references', () => {
  const container: V1Container = {
    name: 'c',
    resources: { limits: { memory: '128Mi' } },
    envFrom: [{ configMapRef: { name: 'settings' }, prefix: 'CFG_' }],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'POD_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } },
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      { name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
      { name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
      { name: 'SA', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
      { name: 'APP', valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
      { name: 'MEM', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
      { name: 'CPU', valueFrom: { resourceFieldRef: { resource: 'limits.cpu' } } },
      { name: 'PW', valueFrom: { secretKeyRef: { name: 'creds', key: 'PASSWORD' } } },
      { name: 'LEVEL', valueFrom: { configMapKeyRef: { name: 'settings', key: 'LEVEL' } } },
      { name: 'URL', value: 'http://$(POD_IP):$(ECHO_SVC_SERVICE_PORT)/$(UNDEFINED)' },
    ],
  };
  const env = asMap(containerEnv(container, { facts, objects: objects(), services }));
  assert.is(env.POD_NAME, 'echo-1');
  assert.is(env.POD_NS, 'shop');
  assert.is(env.POD_UID, 'u-1');
  assert.is(env.POD_IP, '10.244.0.7');
  assert.is(env.HOST_IP, '172.30.0.1');
  assert.is(env.NODE, 'tplab-node');
  assert.is(env.SA, 'echo-sa');
  assert.is(env.APP, 'echo');
  assert.is(env.MEM, '128');
  assert.is(env.CPU, '2', 'no CPU limit: node allocatable');
  assert.is(env.PW, 's3cret');
  assert.is(env.LEVEL, '3');
  assert.is(env.CFG_MODE, 'fast');
  assert.not.ok('CFG_bad key' in env, 'keys that are no valid env names are skipped');
  assert.is(env.URL, 'http://10.244.0.7:80/$(UNDEFINED)');
});

test('service links: the kubernetes service always, the namespace services unless disabled', () => {
  const env = asMap(serviceEnv(pod, services));
  assert.is(env.KUBERNETES_SERVICE_HOST, '10.96.0.1');
  assert.is(env.KUBERNETES_SERVICE_PORT, '443');
  assert.is(env.KUBERNETES_SERVICE_PORT_HTTPS, '443');
  assert.is(env.KUBERNETES_PORT, 'tcp://10.96.0.1:443');
  assert.is(env.KUBERNETES_PORT_443_TCP_ADDR, '10.96.0.1');
  assert.is(env.ECHO_SVC_SERVICE_HOST, '10.96.3.4');
  assert.is(env.ECHO_SVC_PORT_53_UDP, 'udp://10.96.3.4:53');
  assert.is(env.ECHO_SVC_PORT_53_UDP_PROTO, 'udp');
  assert.not.ok('OTHER_SERVICE_HOST' in env, 'other services of default are not linked');
  assert.not.ok('HEADLESS_SERVICE_HOST' in env, 'headless services have no address');
  const noLinks = asMap(serviceEnv({ ...pod, spec: { ...pod.spec!, enableServiceLinks: false } }, services));
  assert.ok('KUBERNETES_SERVICE_HOST' in noLinks);
  assert.not.ok('ECHO_SVC_SERVICE_HOST' in noLinks);
});

test('the container wins over service env; process env adds PATH, HOSTNAME, HOME', () => {
  const vars = containerEnv(
    { name: 'c', env: [{ name: 'KUBERNETES_SERVICE_PORT', value: '6443' }] },
    {
      facts,
      objects: objects(),
      services,
    },
  );
  const env = processEnvironment({ name: 'c' }, 'echo-1', 1000, vars);
  assert.is(env.KUBERNETES_SERVICE_PORT, '6443');
  assert.is(env.HOSTNAME, 'echo-1');
  assert.is(env.HOME, '/');
  assert.match(env.PATH!, /\/usr\/bin/);
});

test('missing references: CreateContainerConfigError unless optional', () => {
  const ctx = { facts, objects: objects(), services };
  const run = (env: V1Container['env']) => () => containerEnv({ name: 'c', env }, ctx);
  assert.throws(
    run([{ name: 'X', valueFrom: { configMapKeyRef: { name: 'missing', key: 'k' } } }]),
    (e: unknown) => e instanceof ContainerConfigError && /configmap "missing" not found/.test(e.message),
  );
  assert.throws(
    run([{ name: 'X', valueFrom: { configMapKeyRef: { name: 'settings', key: 'nope' } } }]),
    /couldn't find key nope in ConfigMap shop\/settings/,
  );
  assert.throws(
    run([{ name: 'X', valueFrom: { secretKeyRef: { name: 'absent', key: 'k' } } }]),
    /secret "absent" not found/,
  );
  assert.throws(
    run([{ name: 'X', valueFrom: { fieldRef: { fieldPath: 'spec.bogus' } } }]),
    /unsupported fieldPath/,
  );
  const optional = containerEnv(
    {
      name: 'c',
      env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'missing', key: 'k', optional: true } } }],
    },
    ctx,
  );
  assert.not.ok(optional.some((v) => v.name === 'X'));
});

test('$(VAR) expansion: $$ escapes, unknown and unterminated references stay', () => {
  const lookup = (n: string) => ({ A: 'x', B: 'y' })[n];
  assert.is(expandVars('$(A)-$(B)', lookup), 'x-y');
  assert.is(expandVars('$$(A)', lookup), '$(A)');
  assert.is(expandVars('$(C) $(A', lookup), '$(C) $(A');
  assert.is(expandVars('cost: $5', lookup), 'cost: $5');
  assert.equal(expandCommand(['--port=$(P)'], [{ name: 'P', value: '8080' }]), ['--port=8080']);
});

test('referenced objects come from env, envFrom and volumes of all containers', () => {
  const refs = referencedObjects({
    spec: {
      initContainers: [{ name: 'i', envFrom: [{ secretRef: { name: 's1' } }] }],
      containers: [
        { name: 'c', env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'cm1', key: 'k' } } }] },
      ],
      volumes: [
        { name: 'v', configMap: { name: 'cm2' } },
        {
          name: 'p',
          projected: { sources: [{ configMap: { name: 'kube-root-ca.crt' } }, { secret: { name: 's2' } }] },
        },
      ],
    },
  });
  assert.equal([...refs.configMaps].sort(), ['cm1', 'cm2', 'kube-root-ca.crt']);
  assert.equal([...refs.secrets].sort(), ['s1', 's2']);
});

test.run();
