import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ConnectInfo } from '../rpc/gen/connector.js';
import { renderEnvFile } from './env-file.js';
import { httpFilterOf, parseInterceptPort } from './intercept-port.js';
import {
  interceptLines,
  interceptView,
  listText,
  parseOutputFormat,
  statusText,
  statusView,
} from './output.js';
import { collectCidrs, vifFlags } from './vif-flags.js';

test('--port LOCAL[:REMOTE]', () => {
  assert.equal(parseInterceptPort('18090:18080'), { local: 18090, remote: 18080 });
  assert.equal(parseInterceptPort('8080'), { local: 8080, remote: 0 });
  assert.throws(() => parseInterceptPort('1:2:3'), /expected LOCAL\[:REMOTE\]/);
  assert.throws(() => parseInterceptPort(':80'), /expected LOCAL\[:REMOTE\]/);
  assert.throws(() => parseInterceptPort('80:x'), /invalid remote port "x"/);
});

test('personal intercept flags: a filter only when one is given; NAME=VALUE checked', () => {
  assert.is(httpFilterOf({ httpHeader: [] }), undefined);
  assert.equal(httpFilterOf({ httpHeader: ['x-dev=alice'], httpPathPrefix: '/api' }), {
    headers: [{ name: 'x-dev', value: 'alice' }],
    pathPrefix: '/api',
    pathEqual: '',
    pathRegex: '',
  });
  assert.throws(() => httpFilterOf({ httpHeader: ['x-dev'] }), /expected NAME=VALUE/);
});

test('an intercept shows its filter and owner (status, describe, -o json)', () => {
  const view = interceptView({
    id: 'c:web',
    spec: {
      name: 'web',
      workload: 'web',
      namespace: 'ns',
      workloadKind: 'Deployment',
      mechanism: 'tcp',
      remotePort: 8080,
      portName: '',
      targetHost: '127.0.0.1',
      targetPort: 18190,
      client: 'alice@laptop',
      httpFilter: {
        headers: [{ name: 'x-dev', value: 'alice' }],
        pathPrefix: '',
        pathEqual: '',
        pathRegex: '',
      },
    },
    clientSessionId: 'c',
    disposition: 2,
    message: '',
    pods: [],
    environment: {},
    createdUnixMs: 0,
  });
  assert.is(view.filter, 'x-dev=alice');
  assert.equal(interceptLines([view], '  '), [
    '  Intercepts:',
    '    web: ACTIVE  ns/web port 8080 -> 127.0.0.1:18190, x-dev=alice, by alice@laptop',
  ]);
});

test('-o accepts json and yaml only', () => {
  assert.is(parseOutputFormat('json'), 'json');
  assert.is(parseOutputFormat('yaml'), 'yaml');
  assert.throws(() => parseOutputFormat('xml'), /use json or yaml/);
});

test('env files quote what a shell would split', () => {
  assert.is(
    renderEnvFile({ B: 'two words', A: 'plain', C: 'a"b\\c\nd' }),
    'A=plain\nB="two words"\nC="a\\"b\\\\c\\nd"\n',
  );
});

test('status text says when the daemon is not running, and what is wrong when reconnecting', () => {
  assert.match(statusText(statusView(undefined)), /not running \(tp connect starts it\)/);
  const text = statusText(
    statusView({
      state: 'RECONNECTING',
      managerAddress: '127.0.0.1:1',
      sessionId: '',
      namespace: '',
      managerVersion: '0.1.0',
      cluster: undefined,
      intercepts: [],
      context: '',
      kubeconfig: '',
      rootDaemon: undefined,
      error: 'lost the traffic manager: connection refused',
      logFile: '/tmp/x.log',
      daemonPid: 42,
      rootDaemonNeeded: false,
    }),
  );
  assert.match(text, /^Reconnecting to the traffic manager at 127.0.0.1:1/);
  assert.match(text, /problem: +lost the traffic manager: connection refused/);
});

test('list text lines up its columns', () => {
  const text = listText([
    {
      name: 'echo',
      namespace: 'default',
      kind: 'Standalone',
      agentState: 'INSTALLED',
      mechanism: 'none',
      replicas: 1,
      readyReplicas: 1,
      ports: [{ name: '', appPort: 18080, agentPort: 15001, protocol: 'TCP' }],
      agents: [{ pod: 'echo-0', podIp: '127.0.0.1', version: '0.1.0', mechanism: 'none' }],
      intercepts: [],
    },
  ]);
  const [head, row] = text.split('\n');
  assert.is(head!.indexOf('WORKLOAD'), row!.indexOf('echo'));
  assert.match(row!, /18080->15001/);
});

const connected: ConnectInfo = {
  state: 'CONNECTED',
  managerAddress: '127.0.0.1:40000 (port-forward to tp-system/traffic-manager)',
  sessionId: 'c-1',
  namespace: 'default',
  managerVersion: '0.1.0',
  cluster: {
    podSubnets: ['10.244.0.0/24'],
    serviceSubnets: ['10.96.0.0/16'],
    clusterDomain: 'cluster.local',
    dnsIps: ['10.96.0.10'],
    managerPodIp: '10.244.0.5',
    managedNamespaces: [],
  },
  intercepts: [],
  context: 'lab',
  kubeconfig: '/k',
  rootDaemon: {
    running: true,
    version: '0.1.0',
    vifName: 'tp0',
    subnets: ['10.244.0.0/24', '10.96.0.0/16'],
    dns: '/etc/resolv.conf: nameserver 198.18.0.1 (forwarding to 127.0.0.1)',
    message: 'connected; 0 TCP and 0 UDP flows open',
  },
  error: '',
  logFile: '/tmp/x.log',
  daemonPid: 42,
  rootDaemonNeeded: false,
};

test('status shows the VIF: its name, subnets, DNS and the root daemon health (text and -o json)', () => {
  const view = statusView(connected);
  const text = statusText(view);
  assert.match(text, /VIF: +tp0 routing 10.244.0.0\/24, 10.96.0.0\/16/);
  assert.match(text, /DNS: +\/etc\/resolv.conf: nameserver 198.18.0.1/);
  assert.match(text, /root daemon: running \(0.1.0\): connected; 0 TCP/);
  assert.match(
    text,
    /cluster: +pods 10.244.0.0\/24; services 10.96.0.0\/16; DNS 10.96.0.10 \(cluster.local\)/,
  );
  const json = JSON.parse(JSON.stringify(view));
  assert.equal(json.vif, {
    state: 'UP',
    name: 'tp0',
    subnets: ['10.244.0.0/24', '10.96.0.0/16'],
    dns: '/etc/resolv.conf: nameserver 198.18.0.1 (forwarding to 127.0.0.1)',
    rootDaemon: { running: true, version: '0.1.0', message: 'connected; 0 TCP and 0 UDP flows open' },
  });
  assert.equal(json.cluster.podSubnets, ['10.244.0.0/24']);
  assert.is(json.namespace, 'default');
});

test('status says why there is no VIF', () => {
  const view = statusView({
    ...connected,
    rootDaemon: {
      running: false,
      version: '',
      vifName: '',
      subnets: [],
      dns: '',
      message: 'off (tp connect --no-vif)',
    },
  });
  assert.match(statusText(view), /VIF: +off \(tp connect --no-vif\)/);
  assert.not.match(statusText(view), /root daemon:/);
  assert.is((view as { vif: { state: string } }).vif.state, 'DOWN');
});

test('VIF flags: CIDRs checked before anything starts; --no-vif excludes the others', () => {
  assert.equal(collectCidrs('10.0.0.0/8, 192.168.0.0/16', ['172.16.0.0/12']), [
    '172.16.0.0/12',
    '10.0.0.0/8',
    '192.168.0.0/16',
  ]);
  assert.equal(vifFlags({ vif: true, alsoProxy: ['10.0.0.0/8'], neverProxy: [] }), {
    noVif: false,
    alsoProxy: ['10.0.0.0/8'],
    neverProxy: [],
    allowConflictingSubnets: false,
  });
  assert.throws(
    () => vifFlags({ vif: true, alsoProxy: [], neverProxy: ['10.0.0.0/33'] }),
    /invalid --never-proxy CIDR "10.0.0.0\/33"/,
  );
  assert.throws(
    () => vifFlags({ vif: false, alsoProxy: ['10.0.0.0/8'], neverProxy: [] }),
    /leave out --no-vif/,
  );
});

test.run();
