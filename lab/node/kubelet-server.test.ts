import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { route } from './kubelet-server.js';
import {
  EXEC_PROTOCOLS,
  errorResponse,
  negotiateProtocol,
  offeredProtocols,
  PORT_FORWARD_PROTOCOLS,
} from './streaming/handshake.js';

test('kubelet routes, with and without the pod UID', () => {
  assert.equal(route('/containerLogs/default/echo-1/echo'), {
    kind: 'logs',
    namespace: 'default',
    pod: 'echo-1',
    container: 'echo',
  });
  assert.equal(route('/exec/default/client/shell'), {
    kind: 'exec',
    namespace: 'default',
    pod: 'client',
    uid: undefined,
    container: 'shell',
  });
  assert.equal(route('/exec/default/client/u-1/shell'), {
    kind: 'exec',
    namespace: 'default',
    pod: 'client',
    uid: 'u-1',
    container: 'shell',
  });
  assert.equal(route('/portForward/default/echo-1'), {
    kind: 'portForward',
    namespace: 'default',
    pod: 'echo-1',
    uid: undefined,
  });
  assert.equal(route('/healthz'), { kind: 'healthz' });
  assert.equal(route('/runningpods/'), { kind: 'runningpods' });
  assert.is(route('/containerLogs/default/echo-1'), undefined);
  assert.is(route('/metrics'), undefined);
});

test('protocol negotiation picks the first client protocol the server speaks', () => {
  assert.equal(offeredProtocols('v5.channel.k8s.io, v4.channel.k8s.io'), [
    'v5.channel.k8s.io',
    'v4.channel.k8s.io',
  ]);
  assert.equal(
    negotiateProtocol(['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io'], EXEC_PROTOCOLS),
    {
      ok: true,
      protocol: 'v4.channel.k8s.io',
    },
  );
  const refused = negotiateProtocol(['SPDY/3.1+portforward.k8s.io'], PORT_FORWARD_PROTOCOLS);
  assert.is(refused.ok, false);
  if (!refused.ok) assert.is(refused.status, 403);
  assert.is(negotiateProtocol([], EXEC_PROTOCOLS).ok, false);
  const response = errorResponse(400, 'you must specify a command');
  assert.match(response, /^HTTP\/1\.1 400 Bad Request\r\n/);
  assert.match(response, /"message":"you must specify a command"/);
});

test.run();
