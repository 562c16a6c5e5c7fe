import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { InterceptDisposition as D, type InterceptInfo } from '../rpc/gen/manager.js';
import { appEnvironment, parseEnvFile } from './app-env.js';
import { listenersOf } from './config.js';
import type { AppContainer } from './containers.js';
import { plan } from './intercept-routes.js';
import { parseSockaddr } from './original-dst.js';

test('one listener per agent port; app ports may share one', () => {
  const l = listenersOf([
    { appPort: 8080, agentPort: 15001 },
    { appPort: 9090, agentPort: 15001 },
    { appPort: 7070, agentPort: 15002 },
  ]);
  assert.equal(
    [...l],
    [
      [15001, [8080, 9090]],
      [15002, [7070]],
    ],
  );
});

test('the app environment: a KEY=VALUE file, or the agent env without TP_*', () => {
  assert.equal(parseEnvFile('# comment\nA=1\n\nexport B="two words"\nC=\'x=y\'\n'), {
    A: '1',
    B: 'two words',
    C: 'x=y',
  });
  assert.throws(() => parseEnvFile('A=1\nnonsense\n'), /line 2 is not KEY=VALUE/);
  assert.equal(appEnvironment(undefined, { TP_PORTS: '1:2', HOME: '/root' }), { HOME: '/root' });
  assert.throws(
    () => appEnvironment('/nonexistent/env', {}),
    /TP_APP_ENV_FILE=\/nonexistent\/env cannot be read/,
  );
});

test('SO_ORIGINAL_DST sockaddrs', () => {
  const v4 = Buffer.alloc(28);
  v4.writeUInt16LE(2, 0);
  v4.writeUInt16BE(8080, 2);
  Buffer.from([10, 0, 0, 7]).copy(v4, 4);
  assert.equal(parseSockaddr(v4), { address: '10.0.0.7', port: 8080 });
  const v6 = Buffer.alloc(28);
  v6.writeUInt16LE(10, 0);
  v6.writeUInt16BE(9090, 2);
  v6.writeUInt16BE(0xfd00, 8);
  v6.writeUInt16BE(7, 22);
  assert.equal(parseSockaddr(v6), { address: 'fd00:0:0:0:0:0:0:7', port: 9090 });
});

const intercept = (
  id: string,
  port: number,
  pods: InterceptInfo['pods'] = [],
  ingest?: { container: string },
): InterceptInfo => ({
  id,
  spec: {
    name: id,
    workload: 'echo',
    namespace: 'default',
    workloadKind: '',
    mechanism: 'tcp',
    remotePort: port,
    portName: '',
    targetHost: '127.0.0.1',
    targetPort: 1,
    client: 'a@b',
    serviceName: '',
    ingest: ingest !== undefined,
    container: ingest?.container ?? '',
    httpFilter: undefined,
  },
  clientSessionId: 'c',
  disposition: D.WAITING,
  message: '',
  pods,
  environment: {},
  createdUnixMs: 0,
  container: '',
  mountPoint: '',
  mountReadWrite: false,
  directToken: '',
  localMountPort: 0,
});

const app: AppContainer = { name: 'app', appPorts: [18080], environment: { WHO: 'app' } };
const sidecar: AppContainer = { name: 'sidecar', appPorts: [], environment: { WHO: 'sidecar' } };

test('the agent accepts intercepts of ports it captures, refuses others, routes the accepted', () => {
  const sent = new Map<string, D>();
  const p = plan([intercept('i1', 18080), intercept('i2', 9999)], 'echo-0', [18080], sent, [app]);
  assert.equal(
    p.reviews.map((r) => [r.interceptId, r.disposition]),
    [
      ['i1', D.ACTIVE],
      ['i2', D.AGENT_ERROR],
    ],
  );
  assert.match(p.reviews[1]!.message, /does not capture port 9999: it captures 18080/);
  assert.equal([...p.routes], [[18080, 'i1']]);
  // The next snapshot, before the manager shows the reviews: nothing is sent twice.
  assert.equal(
    plan([intercept('i1', 18080), intercept('i2', 9999)], 'echo-0', [18080], sent, [app]).reviews,
    [],
  );
  // The intercept is gone: no route, and the memory of the review goes too.
  const gone = plan([], 'echo-0', [18080], sent, [app]);
  assert.equal(gone.routes.size, 0);
  assert.is(sent.size, 0);
});

test('personal intercepts share a port as filters; a global one would take it whole', () => {
  const personal = (id: string, dev: string): InterceptInfo => {
    const i = intercept(id, 18080);
    i.spec!.httpFilter = {
      headers: [{ name: 'x-dev', value: dev }],
      pathPrefix: '',
      pathEqual: '',
      pathRegex: '',
    };
    return i;
  };
  const p = plan([personal('a', 'alice'), personal('b', 'bob')], 'echo-0', [18080], new Map(), [app]);
  assert.equal(
    p.reviews.map((r) => [r.interceptId, r.disposition]),
    [
      ['a', D.ACTIVE],
      ['b', D.ACTIVE],
    ],
  );
  assert.is(p.routes.size, 0);
  assert.equal(
    p.personal.get(18080)?.map((r) => [r.interceptId, r.filter.headers[0]!.value]),
    [
      ['a', 'alice'],
      ['b', 'bob'],
    ],
  );
  // The manager never lets them share a port; should a snapshot show it, the global one wins.
  const both = plan([personal('a', 'alice'), intercept('g', 18080)], 'echo-0', [18080], new Map(), [app]);
  assert.equal([...both.routes], [[18080, 'g']]);
  assert.is(both.personal.size, 0);
});

test('the direct tokens of exactly the routed intercepts, global or personal, for their own client', () => {
  const withToken = (i: InterceptInfo, token: string, session = 'c'): InterceptInfo => ({
    ...i,
    directToken: token,
    clientSessionId: session,
  });
  const personal = withToken(intercept('p', 18080), 'tp', 'c2');
  personal.spec!.httpFilter = {
    headers: [{ name: 'x-dev', value: 'a' }],
    pathPrefix: '',
    pathEqual: '',
    pathRegex: '',
  };
  const p = plan(
    [
      withToken(intercept('g', 18080), 'tg'),
      withToken(intercept('other', 9999), 'to'), // refused: a port this agent does not capture
      withToken(intercept('ing', 0, [], { container: 'app' }), 'ti'), // an ingest takes no connections
      intercept('old', 18081), // no token: an older manager
    ],
    'echo-0',
    [18080, 18081],
    new Map(),
    [{ ...app, appPorts: [18080, 18081] }],
  );
  assert.equal(
    [...p.direct],
    [['g', { token: 'tg', clientSessionId: 'c', targetHost: '127.0.0.1', targetPort: 1 }]],
  );
  // A personal intercept's token, when no global one takes its port.
  const q = plan([personal], 'echo-0', [18080], new Map(), [app]);
  assert.equal([...q.direct.keys()], ['p']);
  assert.is(q.direct.get('p')!.clientSessionId, 'c2');
  // The global one takes the port whole: the personal one's token goes with its route.
  const both = plan([personal, withToken(intercept('g', 18080), 'tg')], 'echo-0', [18080], new Map(), [app]);
  assert.equal([...both.direct.keys()], ['g']);
});

test('a pod already reviewed ACTIVE by the manager is not reviewed again', () => {
  const sent = new Map<string, D>();
  const reviewed = intercept('i1', 18080, [
    { podName: 'echo-0', podIp: '', disposition: D.ACTIVE, message: '', directPort: 0 },
  ]);
  const p = plan([reviewed], 'echo-0', [18080], sent, [app]);
  assert.equal(p.reviews, []);
  assert.equal([...p.routes], [[18080, 'i1']]);
});

test('reviews name the container: the one owning the port, or the one of the ingest; ingests take no traffic', () => {
  const sent = new Map<string, D>();
  const p = plan(
    [
      intercept('i1', 18080),
      intercept('g1', 0, [], { container: 'sidecar' }),
      intercept('g2', 0, [], { container: '' }),
      intercept('g3', 0, [], { container: 'nope' }),
    ],
    'echo-0',
    [18080],
    sent,
    [app, sidecar],
  );
  assert.equal(
    p.reviews.map((r) => [r.interceptId, r.disposition, r.container]),
    [
      ['i1', D.ACTIVE, 'app'],
      ['g1', D.ACTIVE, 'sidecar'],
      ['g2', D.AGENT_ERROR, ''],
      ['g3', D.AGENT_ERROR, ''],
    ],
  );
  assert.match(p.reviews[2]!.message, 'several containers (app, sidecar): choose one with -c CONTAINER');
  assert.match(p.reviews[3]!.message, 'no container "nope": its containers are app, sidecar');
  assert.equal([...p.routes], [[18080, 'i1']], 'only the intercept routes traffic');
  // One container: an ingest without -c means it.
  const one = plan([intercept('g4', 0, [], { container: '' })], 'echo-0', [18080], new Map(), [app]);
  assert.equal(one.reviews[0]!.container, 'app');
});

test.run();
