// The filter's matching as the agent uses it, and its one-line form.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HttpFilter } from '../rpc/gen/manager.js';
import { compileFilter, formatFilter, isPersonal, parseHeaderFlag, pathOf } from './filter.js';

const filter = (f: Partial<HttpFilter>): HttpFilter => ({
  headers: [],
  pathPrefix: '',
  pathEqual: '',
  pathRegex: '',
  ...f,
});
const request = (url: string, headers: Record<string, string | string[]> = {}) => ({
  url,
  header: (n: string) => headers[n],
});

test('every header must match (values exact), and the path form when given', () => {
  const f = compileFilter(
    filter({
      headers: [
        { name: 'X-Dev', value: 'alice' },
        { name: 'x-team', value: 'a' },
      ],
      pathPrefix: '/api',
    }),
  );
  assert.ok(f.matches(request('/api/x?q=1', { 'x-dev': 'alice', 'x-team': 'a' })));
  assert.not.ok(f.matches(request('/api/x', { 'x-dev': 'alice' })));
  assert.not.ok(f.matches(request('/api/x', { 'x-dev': 'Alice', 'x-team': 'a' })));
  assert.not.ok(f.matches(request('/other', { 'x-dev': 'alice', 'x-team': 'a' })));
  // A header sent twice matches when one of its values does.
  assert.ok(f.matches(request('/api', { 'x-dev': ['bob', 'alice'], 'x-team': 'a' })));
});

test('path forms: equal, prefix and regex test the path without its query; absolute forms are reduced', () => {
  assert.ok(compileFilter(filter({ pathEqual: '/a' })).matches(request('/a?x=1')));
  assert.not.ok(compileFilter(filter({ pathEqual: '/a' })).matches(request('/a/b')));
  assert.ok(compileFilter(filter({ pathRegex: '^/v[0-9]+/users$' })).matches(request('/v2/users?x')));
  assert.ok(compileFilter(filter({ pathPrefix: '/a' })).matches(request('http://h:80/a/b')));
  assert.is(pathOf('http://h'), '/');
  assert.is(pathOf('/x#frag'), '/x');
  // gRPC paths are /package.Service/Method.
  assert.ok(
    compileFilter(filter({ pathPrefix: '/grpc.health.v1.Health/' })).matches(
      request('/grpc.health.v1.Health/Check'),
    ),
  );
});

test('the one-line form, and what counts as personal', () => {
  assert.is(formatFilter(undefined), 'all traffic');
  assert.is(formatFilter(filter({})), 'all traffic');
  assert.not.ok(isPersonal(filter({})));
  assert.is(
    formatFilter(filter({ headers: [{ name: 'x-dev', value: 'alice' }], pathRegex: '^/a' })),
    'x-dev=alice,path-regex=^/a',
  );
  assert.equal(parseHeaderFlag('x-dev=alice'), { name: 'x-dev', value: 'alice' });
  assert.equal(parseHeaderFlag('x-dev: a=b'), { name: 'x-dev', value: 'a=b' });
  assert.ok('error' in parseHeaderFlag('novalue'));
});

test.run();
