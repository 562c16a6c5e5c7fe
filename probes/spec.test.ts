// The probe contract: the paths the kubelet asks on the probe port, and TP_PROBES both ways.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type AppProbe, decodeProbes, encodeProbes, parseProbePath, probePath } from './spec.js';

test('probe paths: one per container and kind, plus the agent, and nothing else', () => {
  assert.is(probePath('echo', 'readiness'), '/tp-probe/echo/readiness');
  assert.equal(parseProbePath('/tp-probe/echo/readiness'), {
    agent: false,
    container: 'echo',
    kind: 'readiness',
  });
  assert.equal(parseProbePath('/tp-probe/echo/startup?x=1'), {
    agent: false,
    container: 'echo',
    kind: 'startup',
  });
  // A container may be called "agent": its probes have a kind, the agent's path has none.
  assert.equal(parseProbePath('/tp-probe/agent/liveness'), {
    agent: false,
    container: 'agent',
    kind: 'liveness',
  });
  assert.equal(parseProbePath('/tp-probe/agent'), { agent: true });
  for (const bad of [
    '/',
    '/tp-probe/',
    '/tp-probe/echo',
    '/tp-probe/echo/ready',
    '/tp-probe//readiness',
    '/tp-probe/echo/readiness/more',
    '/app-health/echo/readiness',
  ])
    assert.is(parseProbePath(bad), undefined, bad);
});

test('TP_PROBES: every handler round-trips; absent or empty is no probes', () => {
  const probes: AppProbe[] = [
    {
      container: 'echo',
      kind: 'readiness',
      timeoutSeconds: 1,
      httpGet: { port: 8080, scheme: 'HTTPS', path: '/ready', httpHeaders: [{ name: 'X', value: 'y' }] },
    },
    { container: 'echo', kind: 'liveness', timeoutSeconds: 5, tcpSocket: { port: 8080 } },
    { container: 'api', kind: 'startup', timeoutSeconds: 2, grpc: { port: 50051, service: '' } },
  ];
  assert.equal(decodeProbes(encodeProbes(probes), 'TP_PROBES'), probes);
  assert.equal(decodeProbes(undefined, 'TP_PROBES'), []);
  assert.equal(decodeProbes(' ', 'TP_PROBES'), []);
});

test('TP_PROBES: a malformed value names the variable and the entry', () => {
  const one = (p: Record<string, unknown>) =>
    JSON.stringify([{ container: 'echo', kind: 'readiness', timeoutSeconds: 1, ...p }]);
  const cases: [string, RegExp][] = [
    ['{', /TP_PROBES is not JSON/],
    ['{}', /TP_PROBES is not a JSON array/],
    [one({}), /TP_PROBES\[0\] has no httpGet, tcpSocket or grpc/],
    [one({ tcpSocket: { port: 0 } }), /TP_PROBES\[0\]\.tcpSocket\.port is not a port number/],
    [one({ tcpSocket: { port: 'http' } }), /TP_PROBES\[0\]\.tcpSocket\.port is not a port number/],
    [one({ kind: 'ready', tcpSocket: { port: 1 } }), /TP_PROBES\[0\]\.kind is not one of readiness/],
    [one({ container: 'A/B', tcpSocket: { port: 1 } }), /TP_PROBES\[0\]\.container is not a container/],
    [one({ timeoutSeconds: 0, tcpSocket: { port: 1 } }), /timeoutSeconds is not a whole number/],
    [
      one({ httpGet: { port: 1, scheme: 'FTP', path: '/', httpHeaders: [] } }),
      /httpGet\.scheme is neither HTTP nor HTTPS/,
    ],
    [one({ httpGet: { port: 1, scheme: 'HTTP', path: '/' } }), /httpGet\.httpHeaders is not a list/],
    [one({ grpc: { port: 1 } }), /grpc\.service is not a string/],
  ];
  for (const [text, pattern] of cases) assert.throws(() => decodeProbes(text, 'TP_PROBES'), pattern, text);
  const twice = JSON.stringify([
    { container: 'echo', kind: 'readiness', timeoutSeconds: 1, tcpSocket: { port: 1 } },
    { container: 'echo', kind: 'readiness', timeoutSeconds: 1, tcpSocket: { port: 2 } },
  ]);
  assert.throws(() => decodeProbes(twice, 'TP_PROBES'), /TP_PROBES lists echo\/readiness twice/);
});

test.run();
