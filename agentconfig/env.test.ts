// The agent's environment contract: the env a known workload's agent gets (a golden file; REFRESH_GOLDEN=true
// rewrites it), decode(encode(x)) = x, and the errors a malformed environment gives.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import {
  APP_ENV_PREFIX,
  appEnvPrefix,
  containerEnvironment,
  DEFAULT_WORKSTATION_DIAL_DEADLINE_MS,
  decode,
  ENV,
  type EnvEntry,
  encode,
  type InjectedAgent,
} from './env.js';

const golden = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../agentconfig/testdata/echo.env.golden.yaml',
);

/** The echo Deployment of docs/kubernetes.md: one app container, port 8080 captured, a readiness probe. */
const echo: InjectedAgent = {
  workloadName: 'echo',
  workloadKind: 'Deployment',
  managerAddress: 'traffic-manager.tp-system:8081',
  ports: [{ appPort: 8080, agentPort: 9900 }],
  mechanism: 'iptables',
  containers: [
    {
      name: 'echo',
      envPrefix: appEnvPrefix(0),
      ports: [{ name: 'http', appPort: 8080, agentPort: 9900, protocol: 'TCP' }],
    },
    { name: 'logger', envPrefix: appEnvPrefix(1), ports: [] },
  ],
  probePort: 15021,
  directPort: 15022,
  probes: [
    {
      container: 'echo',
      kind: 'readiness',
      timeoutSeconds: 1,
      httpGet: { port: 8080, scheme: 'HTTP', path: '/ready', httpHeaders: [] },
    },
  ],
  managerTokenFile: '/var/run/secrets/tp.dev/manager/token',
  logLevel: 'info',
  workstationDialDeadlineMs: 3000,
};

/** What the kubelet gives the container: values as written, downward-API fields from the pod. */
function resolve(
  entries: EnvEntry[],
  pod = { name: 'echo-7d9c-x2x4z', ip: '10.88.0.12', namespace: 'shop' },
) {
  const fields: Record<string, string> = {
    'metadata.name': pod.name,
    'status.podIP': pod.ip,
    'metadata.namespace': pod.namespace,
  };
  const env: Record<string, string> = {};
  for (const e of entries) {
    const value = 'value' in e ? e.value : fields[e.valueFrom.fieldRef.fieldPath];
    assert.ok(value !== undefined, `${e.name}: no such pod field`);
    env[e.name] = value;
  }
  return env;
}

test('golden: the env of the echo workload’s agent', () => {
  const rendered = YAML.stringify(encode(echo));
  if (process.env.REFRESH_GOLDEN === 'true') fs.writeFileSync(golden, rendered);
  assert.ok(fs.existsSync(golden), `${golden} is missing: run with REFRESH_GOLDEN=true and review it`);
  assert.fixture(rendered, fs.readFileSync(golden, 'utf8'));
});

test('decode(encode(x)) gives back what the injector knew, plus the pod', () => {
  const c = decode(resolve(encode(echo)));
  assert.equal(c.managerAddress, { host: 'traffic-manager.tp-system', port: 8081 });
  assert.equal(
    [c.workloadName, c.workloadKind, c.namespace, c.podName, c.podIp],
    ['echo', 'Deployment', 'shop', 'echo-7d9c-x2x4z', '10.88.0.12'],
  );
  assert.equal(c.ports, echo.ports);
  assert.is(c.mechanism, echo.mechanism);
  assert.equal(c.containers, echo.containers);
  assert.is(c.probePort, echo.probePort);
  assert.is(c.directPort, echo.directPort);
  assert.equal(c.probes, echo.probes);
  assert.is(c.managerTokenFile, echo.managerTokenFile);
  assert.is(c.logLevel, 'info');
  assert.is(c.workstationDialDeadlineMs, 3000);
  // Without probes and a deadline the variables are left out and the agent's defaults hold.
  const bare = decode(resolve(encode({ ...echo, probes: [], workstationDialDeadlineMs: undefined })));
  assert.equal(bare.probes, []);
  assert.is(bare.workstationDialDeadlineMs, DEFAULT_WORKSTATION_DIAL_DEADLINE_MS);
  assert.not.ok(encode({ ...echo, probes: [] }).some((e) => e.name === ENV.probes));
});

test('each container’s environment under its prefix, the prefix stripped', () => {
  const env = {
    ...resolve(encode(echo)),
    TP_APPENV_0_WHO: 'echo',
    TP_APPENV_1_WHO: 'logger',
    TP_APPENV_10_X: '1',
  };
  const [app, logger] = decode(env).containers!;
  assert.equal(containerEnvironment(env, app!), { WHO: 'echo' });
  assert.equal(containerEnvironment(env, logger!), { WHO: 'logger' });
  assert.ok(appEnvPrefix(3).startsWith(APP_ENV_PREFIX));
});

const standalone = {
  TP_MANAGER_ADDRESS: '127.0.0.1:18081',
  TP_WORKLOAD_NAME: 'echo',
  TP_NAMESPACE: 'default',
  TP_POD_NAME: 'echo-0',
  TP_POD_IP: '127.0.0.1',
  TP_PORTS: '18080:15001',
};

test('standalone: the defaults, no containers', () => {
  const c = decode(standalone);
  assert.equal(c.managerAddress, { host: '127.0.0.1', port: 18081 });
  assert.equal(c.ports, [{ appPort: 18080, agentPort: 15001 }]);
  assert.is(c.mechanism, 'none');
  assert.is(c.workloadKind, 'Standalone');
  assert.is(c.probePort, undefined);
  assert.is(c.directPort, undefined, 'no direct service unless asked for');
  assert.equal(c.probes, []);
  assert.is(c.containers, undefined);
  assert.is(c.listenAddress, '');
  assert.is(c.passthrough, 'thread', 'the passthrough thread unless asked otherwise');
  assert.is(decode({ ...standalone, TP_PASSTHROUGH: 'main' }).passthrough, 'main');
});

test('a malformed environment names the variable and the fix', () => {
  const probes = '[{"container":"echo","kind":"readiness","timeoutSeconds":1,"tcpSocket":{"port":18080}}]';
  const cases: [Record<string, string>, RegExp][] = [
    [{ TP_PROBES: probes }, /TP_PROBES is set but TP_PROBE_PORT is not/],
    [{ TP_PROBE_PORT: '15001' }, /TP_PROBE_PORT=15001 is also in TP_PORTS/],
    [{ TP_PROBE_PORT: '15021', TP_PROBES: '{' }, /TP_PROBES is not JSON/],
    [{ TP_DIRECT_PORT: '15001' }, /TP_DIRECT_PORT=15001 is also in TP_PORTS or TP_PROBE_PORT/],
    [
      { TP_DIRECT_PORT: '15021', TP_PROBE_PORT: '15021' },
      /the agent's direct port must be a port of its own/,
    ],
    [{ TP_DIRECT_PORT: 'x' }, /TP_DIRECT_PORT/],
    [
      { TP_WORKLOAD_NAME: '' },
      /TP_WORKLOAD_NAME is not set: the agent needs it, e\.g\. TP_WORKLOAD_NAME=echo/,
    ],
    [{ TP_MECHANISM: 'magic' }, /TP_MECHANISM="magic" is not known: use iptables, ebpf, none/],
    [{ TP_PASSTHROUGH: 'node' }, /TP_PASSTHROUGH="node" is not known: use thread or main/],
    [{ TP_POD_IP: 'pod' }, /TP_POD_IP="pod" is not an IP/],
    [{ TP_LISTEN_ADDRESS: 'everywhere' }, /TP_LISTEN_ADDRESS="everywhere" is not an IP/],
    [{ TP_LOG_LEVEL: 'loud' }, /TP_LOG_LEVEL: unknown log level/],
    [{ TP_PORTS: '8080' }, /invalid TP_PORTS entry "8080"/],
    [{ TP_WORKSTATION_DIAL_DEADLINE: 'soon' }, /TP_WORKSTATION_DIAL_DEADLINE/],
    [{ TP_CONTAINERS: '{' }, /TP_CONTAINERS is not valid .*re-inject the agent/],
    [{ TP_CONTAINERS: '{}' }, /TP_CONTAINERS is not valid \(not a JSON array\)/],
    [{ TP_CONTAINERS: '[{"name":"x"}]' }, /each entry needs name, envPrefix and ports/],
    [
      { TP_CONTAINERS: '[{"name":"x","envPrefix":"HOME","ports":[]}]' },
      /envPrefix "HOME" does not start with TP_APPENV_/,
    ],
    [{ TP_CONTAINERS: '[{"name":"x","envPrefix":"TP_APPENV_0_","ports":[{}]}]' }, /numeric appPort/],
  ];
  for (const [change, pattern] of cases)
    assert.throws(() => decode({ ...standalone, ...change }), pattern, JSON.stringify(change));
});

test.run();
