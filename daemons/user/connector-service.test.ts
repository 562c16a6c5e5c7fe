// The identity token prefetched for the first arrival of a connect through Kubernetes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { prefetched } from './connector-service.js';

test('fetched at once, handed to the first arrival; every later arrival fetches its own', async () => {
  let fetches = 0;
  const identity = prefetched({ onDemand: false, token: async () => `token-${++fetches}` });
  assert.is(fetches, 1, 'fetching started before anyone asked');
  assert.is(identity.onDemand, false);
  assert.is(await identity.token(), 'token-1');
  assert.is(await identity.token(), 'token-2');
  assert.is(fetches, 2);
});

test('a failed prefetch is reported to the arrival that takes it, not as an unhandled rejection', async () => {
  let unhandled = 0;
  const count = () => unhandled++;
  process.on('unhandledRejection', count);
  try {
    let fetches = 0;
    const identity = prefetched({
      onDemand: false,
      token: async () => {
        if (++fetches === 1) throw new Error('forbidden: cannot create sessiontokens');
        return 'token-2';
      },
    });
    await new Promise((r) => setTimeout(r, 20));
    assert.is(unhandled, 0);
    try {
      await identity.token();
      assert.unreachable('the first token failed');
    } catch (e) {
      assert.match((e as Error).message, /forbidden/);
    }
    assert.is(await identity.token(), 'token-2');
  } finally {
    process.off('unhandledRejection', count);
  }
});

test.run();
