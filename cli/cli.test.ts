import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ConnectInfo } from '../rpc/gen/connector.js';
import type { WorkloadInfo } from '../rpc/gen/manager.js';
import { checkEnvOutput, parseEnvSyntax, renderEnv, writeSecretFile } from './env-file.js';
import { httpFilterOf, parseInterceptPort } from './intercept-port.js';
import { mountedText, parseMountFlag, withLocalMountPort } from './mount-flag.js';
import { checkLabel, checkSubdomain } from './names.js';
import {
  interceptLines,
  interceptView,
  listText,
  parseOutputFormat,
  statusText,
  statusView,
  versionsView,
} from './output.js';
import { collectCidrs, vifFlags } from './vif-flags.js';

test('--port LOCAL[:REMOTE]', () => {
  assert.equal(parseInterceptPort('18090:18080'), { local: 18090, remote: 18080, remoteName: '' });
  assert.equal(parseInterceptPort('8080'), { local: 8080, remote: 0, remoteName: '' });
  assert.equal(parseInterceptPort('18090:http'), { local: 18090, remote: 0, remoteName: 'http' });
  assert.equal(parseInterceptPort('18090:grpc-web'), { local: 18090, remote: 0, remoteName: 'grpc-web' });
  assert.throws(() => parseInterceptPort('1:2:3'), /expected LOCAL\[:REMOTE\]/);
  assert.throws(() => parseInterceptPort(':80'), /expected LOCAL\[:REMOTE\]/);
  assert.throws(() => parseInterceptPort('80:70000'), /remote port/);
  assert.throws(() => parseInterceptPort('80:Http'), /a port number or a port name/);
  assert.throws(() => parseInterceptPort('80:-x'), /a port number or a port name/);
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
      serviceName: '',
      ingest: false,
      container: '',
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
    container: '',
    mountPoint: '',
    mountReadWrite: false,
    directToken: '',
    localMountPort: 0,
  });
  assert.is(view.filter, 'x-dev=alice');
  assert.is(view.mount, null);
  assert.equal(interceptLines([view], '  '), [
    '  Intercepts:',
    '    web: ACTIVE  ns/web port 8080 -> 127.0.0.1:18190, x-dev=alice, by alice@laptop',
  ]);
  const mounted = { ...view, mount: { mountPoint: '/tmp/web', access: 'rw' as const, localMountPort: 0 } };
  assert.equal(interceptLines([mounted], ''), [
    'Intercepts:',
    '  web: ACTIVE  ns/web port 8080 -> 127.0.0.1:18190, x-dev=alice, by alice@laptop, volumes at /tmp/web (rw)',
  ]);
  const served = { ...view, mount: { mountPoint: '', access: 'ro' as const, localMountPort: 2222 } };
  assert.match(
    interceptLines([served], '')[1] ?? '',
    /by alice@laptop, volumes over SFTP on 127\.0\.0\.1:2222 \(ro\)$/,
  );
  // How the pods' connections arrive, as the daemon put it in each pod's message.
  const pod = (name: string, message: string) => ({ pod: name, podIp: '', disposition: 'ACTIVE', message });
  const straight = 'connections straight from the agent (port-forward to the pod)';
  const relayed = 'connections through the traffic manager (the agent ended the watch)';
  const line = (pods: ReturnType<typeof pod>[]) => interceptLines([{ ...view, pods }], '')[1];
  assert.is(line([]), '  web: ACTIVE  ns/web port 8080 -> 127.0.0.1:18190, x-dev=alice, by alice@laptop');
  assert.match(line([pod('a', straight)]) ?? '', /by alice@laptop, connections straight from the agent$/);
  assert.match(line([pod('a', straight), pod('b', straight)]) ?? '', /straight from the agent \(2 pods\)$/);
  assert.match(
    line([pod('a', straight), pod('b', relayed)]) ?? '',
    /straight from the agent in 1 of 2 pods \(the others through the traffic manager\)$/,
  );
  assert.match(line([pod('a', relayed)]) ?? '', /, connections through the traffic manager$/);
});

test('--mount[=DIR][:ro|:rw]: read-only unless :rw; =false mounts nothing', () => {
  const none = { mount: false, mountPoint: '', mountReadWrite: false, localMountPort: 0 };
  const at = (mountPoint: string, mountReadWrite: boolean) => ({
    ...none,
    mount: true,
    mountPoint,
    mountReadWrite,
  });
  assert.equal(parseMountFlag(undefined), none);
  assert.equal(parseMountFlag('false'), none);
  assert.equal(parseMountFlag(true), at('', false));
  assert.equal(parseMountFlag(':rw'), at('', true));
  assert.equal(parseMountFlag('true:rw'), at('', true));
  assert.equal(parseMountFlag('m', '/w'), at('/w/m', false));
  assert.equal(parseMountFlag('/m:ro'), at('/m', false));
  assert.equal(parseMountFlag('/m:rw'), at('/m', true));
  assert.throws(() => parseMountFlag('false:rw'), /takes no :rw/);
  assert.is(mountedText('/m', false), 'Volumes mounted read-only at /m (TP_ROOT)\n');
});

test('--local-mount-port PORT[:ro|:rw]: served instead of mounted; never with --mount', () => {
  const none = parseMountFlag(undefined);
  assert.equal(withLocalMountPort(none, undefined), none);
  const served = (localMountPort: number, mountReadWrite: boolean) => ({
    mount: false,
    mountPoint: '',
    mountReadWrite,
    localMountPort,
  });
  assert.equal(withLocalMountPort(none, '2222'), served(2222, false));
  assert.equal(withLocalMountPort(none, '2222:ro'), served(2222, false));
  assert.equal(withLocalMountPort(none, '65535:rw'), served(65535, true));
  assert.equal(withLocalMountPort(parseMountFlag('false'), '2222'), served(2222, false));
  for (const bad of ['0', '65536', 'ssh', '2222:wr', '-1', ''])
    assert.throws(() => withLocalMountPort(none, bad), /expected a port number 1-65535/, bad);
  assert.throws(() => withLocalMountPort(parseMountFlag('/m'), '2222'), /pass one/);
  assert.is(
    mountedText('', false, 2222),
    'Volumes served read-only over SFTP on 127.0.0.1:2222: mount them with e.g. sshfs -o directport=2222 localhost: DIR\n',
  );
});

test('-o accepts json and yaml only', () => {
  assert.is(parseOutputFormat('json'), 'json');
  assert.is(parseOutputFormat('yaml'), 'yaml');
  assert.throws(() => parseOutputFormat('xml'), /use json or yaml/);
});

test('env files quote what a shell would split', () => {
  assert.is(
    renderEnv({ B: 'two words', A: 'plain', C: 'a"b\\c\nd' }).text,
    'A=plain\nB="two words"\nC="a\\"b\\\\c\\nd"\n',
  );
});

const tricky = {
  QUOTES: `it's "quoted" $HOME \`id\` \\n`,
  MULTI: 'line 1\nline 2\n',
  EMPTY: '',
  'dotted.name': 'x',
};

test('--env-syntax sh: a shell reads back every value byte for byte', () => {
  const { text, skipped } = renderEnv(tricky, 'sh');
  assert.equal(skipped, [{ name: 'dotted.name', reason: 'not a name a shell accepts' }]);
  const out = execFileSync('sh', ['-c', `${text}\nprintf '%s\\0%s\\0%s' "$QUOTES" "$MULTI" "$EMPTY"`], {
    encoding: 'utf8',
  });
  assert.equal(out.split('\0'), [tricky.QUOTES, tricky.MULTI, tricky.EMPTY]);
});

test('--env-syntax docker: the rest of the line as is, a value with a newline left out', () => {
  const { text, skipped } = renderEnv(tricky, 'docker');
  assert.is(text, `EMPTY=\nQUOTES=${tricky.QUOTES}\ndotted.name=x\n`);
  assert.equal(
    skipped.map((s) => s.name),
    ['MULTI'],
  );
});

test('--env-syntax json round-trips; unknown syntaxes are refused with the list', () => {
  assert.equal(JSON.parse(renderEnv(tricky, 'json').text), tricky);
  assert.is(parseEnvSyntax('sh'), 'sh');
  assert.throws(() => parseEnvSyntax('csh'), /use compose, docker, sh, json/);
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
      logLevel: 'info',
      daemonPid: 42,
      rootDaemonNeeded: false,
      mappedNamespaces: [],
      managerNamespace: '',
      lastOutage: '',
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
      agents: [{ pod: 'echo-0', podIp: '127.0.0.1', version: '0.1.0', mechanism: 'none', counters: null }],
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
    flowConnections: false,
    flowWindows: false,
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
    kernelNat: { attached: true, offReason: '', packets: 5120, bytes: 7_340_032, flows: 3, leftToWorker: 0 },
  },
  error: '',
  logFile: '/tmp/x.log',
  logLevel: 'debug until 2026-12-06T21:40:00Z, then info',
  daemonPid: 42,
  rootDaemonNeeded: false,
  mappedNamespaces: [],
  managerNamespace: 'tp-system',
  lastOutage: '',
};

test('status shows the VIF: its name, subnets, DNS and the root daemon health (text and -o json)', () => {
  const view = statusView(connected);
  const text = statusText(view);
  assert.match(text, /VIF: +tp0 routing 10.244.0.0\/24, 10.96.0.0\/16/);
  assert.match(text, /DNS: +\/etc\/resolv.conf: nameserver 198.18.0.1/);
  assert.match(text, /root daemon: running \(0.1.0\): connected; 0 TCP/);
  // tp loglevel --duration shows until when, so a forgotten trace level is seen.
  assert.match(
    text,
    /daemon: +pid 42, log \/tmp\/x.log \(level debug until 2026-12-06T21:40:00Z, then info\)/,
  );
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
    kernelNat: { attached: true, offReason: '', packets: 5120, bytes: 7_340_032, flows: 3, leftToWorker: 0 },
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
      kernelNat: undefined,
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

test('names are DNS-1123, checked before anything is sent', () => {
  assert.is(checkSubdomain('echo', 'workload name'), 'echo');
  assert.is(checkSubdomain('my-app.v2', 'workload name'), 'my-app.v2');
  assert.throws(
    () => checkSubdomain('bad name!', 'workload name'),
    /invalid workload name "bad name!": a DNS-1123 name/,
  );
  assert.throws(() => checkSubdomain('Echo', 'workload name'), /DNS-1123/);
  assert.throws(() => checkSubdomain('-echo', 'workload name'), /DNS-1123/);
  assert.throws(() => checkSubdomain('a'.repeat(254), 'workload name'), /DNS-1123/);
  assert.is(checkLabel('tp-system', 'namespace'), 'tp-system');
  assert.throws(() => checkLabel('dev.x', 'namespace'), /invalid namespace "dev.x": a DNS-1123 label/);
  assert.throws(() => checkLabel('a'.repeat(64), 'namespace'), /DNS-1123 label/);
  assert.throws(() => checkLabel('', 'namespace'), /DNS-1123 label/);
});

test('--env-file/--env-json: a missing directory or a directory is an error up front; written 0600, also over an existing file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-env-'));
  try {
    assert.throws(
      () => checkEnvOutput(path.join(dir, 'nosuch', 'x.env'), '--env-file'),
      /--env-file .*nosuch.*does not exist: create it, or choose another path/,
    );
    assert.throws(() => checkEnvOutput(dir, '--env-json'), /--env-json .*: that is a directory/);
    const file = path.join(dir, 'x.env');
    checkEnvOutput(file, '--env-file');
    fs.writeFileSync(file, 'OLD=1\nLONGER=old content\n', { mode: 0o644 });
    fs.chmodSync(file, 0o644);
    writeSecretFile(file, 'A=1\n');
    assert.is(fs.statSync(file).mode & 0o777, 0o600);
    assert.is(fs.readFileSync(file, 'utf8'), 'A=1\n');
    fs.rmSync(file);
    writeSecretFile(file, 'B=2\n');
    assert.is(fs.statSync(file).mode & 0o777, 0o600);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("tp status: tp's, the manager's and the agents' versions; a warning naming the fix for each mismatch", () => {
  const agent = (version: string) => ({ version }) as WorkloadInfo['agents'][number];
  const workloads = [
    { agents: [agent('0.1.0'), agent('0.0.9')] },
    { agents: [agent('0.0.9')] },
  ] as WorkloadInfo[];
  const same = versionsView('0.1.0', '0.1.0', [{ agents: [agent('0.1.0')] } as WorkloadInfo]);
  assert.equal(same, {
    client: '0.1.0',
    manager: '0.1.0',
    agents: [{ version: '0.1.0', pods: 1 }],
    mismatches: [],
  });
  const v = versionsView('0.2.0', '0.1.0', workloads);
  assert.equal(v.agents, [
    { version: '0.0.9', pods: 2 },
    { version: '0.1.0', pods: 1 },
  ]);
  assert.equal(v.mismatches, [
    "tp-manager 0.1.0 is not this tp's version 0.2.0: tp helm upgrade installs the manager of this tp (or use tp 0.1.0)",
    "2 agents run 0.0.9, not the manager's 0.1.0: they update when their pods roll (kubectl rollout restart)",
  ]);
  const text = statusText(statusView(connected, v));
  assert.match(text, /versions: +tp 0.2.0, tp-manager 0.1.0, agents 0.0.9 \(2\), 0.1.0 \(1\)/);
  assert.match(text, /WARNING: +2 agents run 0.0.9/);
  assert.is(JSON.parse(JSON.stringify(statusView(connected, v))).versions.mismatches.length, 2);
});

test.run();
