// How a failed call reads to a user: the connection's failure said plainly, with where it went.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { errorDetails } from './unary-call.js';

test('a failed connection names what happened and where', () => {
  const e = (details: string) =>
    Object.assign(new Error(`14 UNAVAILABLE: ${details}`), { code: 14, details });
  assert.is(
    errorDetails(e('No connection established. Last error: connect ECONNREFUSED 127.0.0.1:18081.')),
    'connection refused by 127.0.0.1:18081',
  );
  assert.is(
    errorDetails(e('No connection established. Last error: connect ENOENT /var/run/tp-root-daemon.socket')),
    'no socket at /var/run/tp-root-daemon.socket',
  );
  assert.is(errorDetails(e('connect EACCES /run/x.sock')), 'EACCES from /run/x.sock');
  assert.is(
    errorDetails(
      e(
        'No connection established. Last error: read ECONNRESET (2026-12-04T23:09:14.766Z). Resolution note: ',
      ),
    ),
    'no connection: the connection was reset as it opened (ECONNRESET)',
  );
  assert.is(
    errorDetails(e('No connection established. Last error: TLS handshake failed. Resolution note: DNS ok')),
    'no connection: TLS handshake failed (DNS ok)',
  );
  assert.is(errorDetails(new Error('plain')), 'plain');
});

test.run();
