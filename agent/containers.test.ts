import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AgentContainer } from '../agentconfig/env.js';
import { InterceptSpec } from '../rpc/gen/manager.js';
import { appContainers, chooseContainer } from './containers.js';

/** TP_CONTAINERS as agentconfig/ decodes it (its errors are tested there). */
const list: AgentContainer[] = [
  {
    name: 'app',
    envPrefix: 'TP_APPENV_0_',
    ports: [{ name: 'http', appPort: 8080, agentPort: 9900, protocol: 'TCP' }],
  },
  { name: 'sidecar', envPrefix: 'TP_APPENV_1_', ports: [] },
  { name: 'ten', envPrefix: 'TP_APPENV_10_', ports: [] },
];
const injected = {
  TP_APPENV_0_WHO: 'app',
  TP_APPENV_0_MULTI: 'a\nb',
  TP_APPENV_1_WHO: 'sidecar',
  TP_APPENV_10_WHO: 'ten',
  TP_PORTS: '8080:9900',
  HOME: '/root',
};

test("TP_CONTAINERS: each container's ports and its own environment", () => {
  const cs = appContainers(list, injected, [8080], () => ({ NOT: 'used' }));
  assert.equal(cs, [
    { name: 'app', appPorts: [8080], environment: { WHO: 'app', MULTI: 'a\nb' } },
    { name: 'sidecar', appPorts: [], environment: { WHO: 'sidecar' } },
    { name: 'ten', appPorts: [], environment: { WHO: 'ten' } },
  ]);
});

test('standalone (no TP_CONTAINERS): one container "app" with the fallback environment', () => {
  assert.equal(
    appContainers(undefined, { HOME: '/root' }, [18080], () => ({ A: '1' })),
    [{ name: 'app', appPorts: [18080], environment: { A: '1' } }],
  );
});

test('the container of an intercept owns its port; an ingest names one or has only one', () => {
  const cs = appContainers(list, injected, [8080], () => ({}));
  const pick = (fields: Partial<InterceptSpec>) => {
    const c = chooseContainer(InterceptSpec.fromPartial(fields), cs);
    return 'container' in c ? c.container.name : c.error;
  };
  assert.is(pick({ remotePort: 8080 }), 'app');
  assert.match(pick({ remotePort: 7070 }), 'no container of the pod owns port 7070');
  assert.is(pick({ ingest: true, container: 'sidecar' }), 'sidecar');
  assert.is(
    pick({ ingest: true }),
    'the pod has several containers (app, sidecar, ten): choose one with -c CONTAINER',
  );
  assert.is(
    pick({ ingest: true, container: 'db' }),
    'the pod has no container "db": its containers are app, sidecar, ten',
  );
});

test.run();
