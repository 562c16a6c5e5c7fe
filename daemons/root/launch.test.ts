import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../../netaddr/parse.js';
import { planLaunch } from './launch.js';

test('root starts the daemon directly; a user through sudo; without sudo a clear error', () => {
  assert.equal(planLaunch({ uid: 0, sudo: undefined }), { kind: 'direct' });
  assert.equal(planLaunch({ uid: 1000, sudo: '/usr/bin/sudo' }), { kind: 'sudo', sudo: '/usr/bin/sudo' });
  assert.throws(
    () => planLaunch({ uid: 1000, sudo: undefined }),
    (e: unknown) =>
      e instanceof UsageError &&
      /needs root for its network interface, and sudo is not installed.*--no-vif/.test(e.message),
  );
});

test.run();
