// Which app port an intercept means: container ports and Service ports, by number or by name, --service to
// choose among Services; refusals list the candidates.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AgentPort } from '../rpc/gen/manager.js';
import { resolveInterceptPort } from './intercept-port.js';

// Container port 8080 "http" behind Service echo (80 "web") and echo-admin (9000 "http"); container port
// 9090 "metrics" behind Service echo (9090 "prom").
const ports: AgentPort[] = [
  {
    name: 'http',
    appPort: 8080,
    agentPort: 15001,
    protocol: 'TCP',
    servicePorts: [
      { service: 'echo', name: 'web', port: 80 },
      { service: 'echo-admin', name: 'http', port: 9000 },
    ],
  },
  {
    name: 'metrics',
    appPort: 9090,
    agentPort: 15002,
    protocol: 'TCP',
    servicePorts: [{ service: 'echo', name: 'prom', port: 9090 }],
  },
];
const where = 'workload "echo" in namespace "shop"';
const resolve = (remotePort: number, portName: string, serviceName = '') =>
  resolveInterceptPort({ remotePort, portName, serviceName }, ports, where);

test('by container port number or name, by Service port number or name', () => {
  assert.equal(resolve(8080, ''), { appPort: 8080 });
  assert.equal(resolve(0, 'metrics'), { appPort: 9090 });
  assert.equal(resolve(80, ''), { appPort: 8080 });
  assert.equal(resolve(0, 'web'), { appPort: 8080 });
  assert.equal(resolve(0, 'prom'), { appPort: 9090 });
  // The container port "http" and Service echo-admin's port "http" name the same app port: not ambiguous.
  assert.equal(resolve(0, 'http'), { appPort: 8080 });
  // Service echo's 9090 and container port 9090 are the same app port too.
  assert.equal(resolve(9090, ''), { appPort: 9090 });
});

test('--service: only that Service ports (and the container ports it reaches)', () => {
  assert.equal(resolve(9000, '', 'echo-admin'), { appPort: 8080 });
  assert.equal(resolve(0, 'http', 'echo-admin'), { appPort: 8080 });
  assert.equal(resolve(8080, '', 'echo-admin'), { appPort: 8080 });
  // echo-admin reaches 8080 only: it is the only port then.
  assert.equal(resolve(0, '', 'echo-admin'), { appPort: 8080 });
  const wrong = resolve(0, 'prom', 'echo-admin');
  assert.ok('error' in wrong);
  assert.match(
    (wrong as { error: string }).error,
    /through Service echo-admin has no port prom: use one of Service echo-admin port 9000 "http" -> 8080/,
  );
  const unknown = resolve(80, '', 'nope');
  assert.equal(unknown, {
    error: `Service "nope" does not select ${where}: the Services that do are echo, echo-admin`,
  });
});

test('unknown, missing and ambiguous ports are refused with the candidates', () => {
  const missing = resolve(7777, '');
  assert.ok('error' in missing);
  assert.match(
    (missing as { error: string }).error,
    /has no port 7777: use one of container port 8080 "http", Service echo port 80 "web" -> 8080, .*container port 9090 "metrics"/,
  );
  const several = resolve(0, '');
  assert.match((several as { error: string }).error, /has several ports: say which with --port LOCAL:REMOTE/);
  // A Service port number that reaches two app ports through two Services.
  const twice: AgentPort[] = [
    { ...ports[0]!, servicePorts: [{ service: 'a', name: '', port: 80 }] },
    { ...ports[1]!, servicePorts: [{ service: 'b', name: '', port: 80 }] },
  ];
  const ambiguous = resolveInterceptPort({ remotePort: 80, portName: '', serviceName: '' }, twice, where);
  assert.match(
    (ambiguous as { error: string }).error,
    /port 80 of .* is ambiguous: Service a port 80 -> 8080, Service b port 80 -> 9090; choose with --service/,
  );
  assert.equal(resolveInterceptPort({ remotePort: 0, portName: '', serviceName: '' }, [], where), {
    error: `${where} captures no port`,
  });
});

test.run();
