// The kubelet's probe semantics as pure decisions: the request, success, redirects, the time budget, and
// the gRPC health messages.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodeHealthCheckRequest,
  decodeHealthCheckResponse,
  encodeHealthCheckRequest,
  encodeHealthCheckResponse,
  servingStatusName,
} from './grpc-health.js';
import {
  canonicalHeaderName,
  FALLBACK_USER_AGENT,
  httpProbeSucceeds,
  type ProbeRequest,
  probeBudgetMs,
  probeRequest,
  probeUserAgent,
  redirectStep,
} from './kubelet-probe.js';

const get = (over: Partial<Parameters<typeof probeRequest>[0]> = {}) => ({
  scheme: 'HTTP' as const,
  port: 8080,
  path: '/healthz',
  httpHeaders: [],
  ...over,
});

test('success is 200 <= status < 400', () => {
  for (const s of [200, 204, 299, 301, 302, 399]) assert.ok(httpProbeSucceeds(s), String(s));
  for (const s of [100, 199, 400, 404, 500, 503]) assert.not.ok(httpProbeSucceeds(s), String(s));
});

test('the budget ends a little before the kubelet gives up', () => {
  assert.is(probeBudgetMs(1), 800);
  assert.is(probeBudgetMs(2), 1800);
  assert.is(probeBudgetMs(30), 29_800);
});

test("the User-Agent: the kubelet's own, else one of the same form", () => {
  assert.is(probeUserAgent('kube-probe/1.31'), 'kube-probe/1.31');
  assert.is(probeUserAgent('curl/8.0'), FALLBACK_USER_AGENT);
  assert.is(probeUserAgent(undefined), FALLBACK_USER_AGENT);
  assert.match(FALLBACK_USER_AGENT, /^kube-probe\/\d+\.\d+$/);
});

test('the request: pod IP and port as the host, default headers, the probe headers as Go writes them', () => {
  const r = probeRequest(get(), '10.88.0.10', 'kube-probe/1.34');
  assert.is(r.url.href, 'http://10.88.0.10:8080/healthz');
  assert.is(r.host, '10.88.0.10:8080');
  assert.equal(r.headers, [
    ['User-Agent', 'kube-probe/1.34'],
    ['Accept', '*/*'],
  ]);
  const v6 = probeRequest(get({ scheme: 'HTTPS', path: '' }), 'fd00::7', 'kube-probe/1.34');
  assert.is(v6.url.href, 'https://[fd00::7]:8080/');
  assert.is(v6.host, '[fd00::7]:8080');
  const custom = probeRequest(
    get({
      path: '/ready?full=1',
      httpHeaders: [
        { name: 'x-custom', value: 'a' },
        { name: 'X-Custom', value: 'b' },
        { name: 'host', value: 'echo.example' },
        { name: 'Accept', value: 'application/json' },
        { name: 'user-agent', value: 'mine' },
      ],
    }),
    '10.88.0.10',
    'kube-probe/1.34',
  );
  assert.is(custom.url.pathname + custom.url.search, '/ready?full=1');
  assert.is(custom.host, 'echo.example');
  assert.equal(custom.headers, [
    ['User-Agent', 'mine'],
    ['X-Custom', 'a'],
    ['X-Custom', 'b'],
    ['Accept', 'application/json'],
  ]);
  // An empty Accept removes it; an empty User-Agent sends none.
  const empty = probeRequest(
    get({
      httpHeaders: [
        { name: 'Accept', value: '' },
        { name: 'User-Agent', value: '' },
      ],
    }),
    '10.88.0.10',
    'kube-probe/1.34',
  );
  assert.equal(empty.headers, []);
  assert.is(canonicalHeaderName('x-forwarded-for'), 'X-Forwarded-For');
  assert.is(canonicalHeaderName('weird header'), 'weird header');
});

test('redirects: followed on the same host up to the tenth request, another host ends the probe', () => {
  const first = probeRequest(get(), '10.88.0.10', 'kube-probe/1.34');
  const step = (status: number, location: string | undefined, requests = 1, current: ProbeRequest = first) =>
    redirectStep(status, location, current, first, requests);
  assert.equal(step(200, undefined), { follow: false });
  assert.equal(step(302, undefined), { follow: false }, 'a 3xx without Location stands');
  assert.equal(step(304, '/other'), { follow: false }, 'not a redirect the client follows');
  const relative = step(302, '/login?next=%2F');
  assert.ok(relative.follow);
  if (relative.follow) {
    assert.is(relative.url.href, 'http://10.88.0.10:8080/login?next=%2F');
    assert.is(relative.host, '10.88.0.10:8080');
  }
  const samePod = step(301, 'https://10.88.0.10:8443/secure');
  assert.ok(samePod.follow && samePod.url.href === 'https://10.88.0.10:8443/secure');
  assert.equal(step(302, 'http://login.example/'), { follow: false }, 'another host: the 3xx is the result');
  assert.equal(step(302, '/again', 9).follow, true);
  assert.equal(step(302, '/again', 10), { follow: false, failure: 'stopped after 10 redirects' });
  assert.match(
    (step(302, 'ftp://10.88.0.10/x') as { failure: string }).failure,
    /unsupported protocol scheme/,
  );
  assert.match((step(302, 'http://[::1') as { failure: string }).failure, /is not a URL/);
  // The probe's own Host header survives a relative redirect only.
  const withHost = probeRequest(
    get({ httpHeaders: [{ name: 'Host', value: 'echo.example' }] }),
    '10.88.0.10',
    'ua',
  );
  const keep = redirectStep(302, '/next', withHost, withHost, 1);
  assert.ok(keep.follow && keep.host === 'echo.example');
  const absolute = redirectStep(302, 'http://10.88.0.10:8080/next', withHost, withHost, 1);
  assert.ok(absolute.follow && absolute.host === '10.88.0.10:8080');
});

test('gRPC health messages, by hand, both ways', () => {
  assert.equal([...encodeHealthCheckRequest('')], []);
  assert.equal([...encodeHealthCheckRequest('a.b')], [0x0a, 3, 0x61, 0x2e, 0x62]);
  assert.is(decodeHealthCheckRequest(encodeHealthCheckRequest('api.v1.Orders')), 'api.v1.Orders');
  assert.is(decodeHealthCheckRequest(Buffer.alloc(0)), '');
  for (const status of [0, 1, 2, 3, 300])
    assert.is(decodeHealthCheckResponse(encodeHealthCheckResponse(status)), status);
  assert.equal([...encodeHealthCheckResponse(1)], [0x08, 1]);
  // Unknown fields are skipped.
  assert.is(decodeHealthCheckResponse(Buffer.from([0x12, 2, 0x41, 0x42, 0x08, 2, 0x1d, 0, 0, 0, 0])), 2);
  assert.throws(() => decodeHealthCheckResponse(Buffer.from([0x12, 5, 0x41])), /truncated/);
  assert.is(servingStatusName(1), 'SERVING');
  assert.is(servingStatusName(2), 'NOT_SERVING');
  assert.is(servingStatusName(9), '9');
});

test.run();
