import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { renderEnvFile } from './env-file.js';
import { parseInterceptPort } from './intercept-port.js';
import { listText, parseOutputFormat, statusText, statusView } from './output.js';

test('--port LOCAL[:REMOTE]', () => {
  assert.equal(parseInterceptPort('18090:18080'), { local: 18090, remote: 18080 });
  assert.equal(parseInterceptPort('8080'), { local: 8080, remote: 0 });
  assert.throws(() => parseInterceptPort('1:2:3'), /expected LOCAL\[:REMOTE\]/);
  assert.throws(() => parseInterceptPort(':80'), /expected LOCAL\[:REMOTE\]/);
  assert.throws(() => parseInterceptPort('80:x'), /invalid remote port "x"/);
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
    }),
  );
  assert.match(text, /^Reconnecting to the traffic manager at 127.0.0.1:1/);
  assert.match(text, /problem: {2}lost the traffic manager: connection refused/);
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

test.run();
