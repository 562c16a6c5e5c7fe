import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CredentialAuthority,
  IDENTITY_TOKEN_TTL_MS,
  type Identity,
  RESUME_TOKEN_TTL_MS,
} from './credentials.js';

const alice: Identity = { user: 'alice', uid: 'u-1', groups: ['dev', 'system:authenticated'], extra: {} };

test('an identity token proves its user once, until it expires', () => {
  let now = 1_000;
  const ca = new CredentialAuthority(Buffer.alloc(32, 1), () => now);
  const { token, expiresAt } = ca.issueIdentity(alice);
  assert.is(expiresAt, 1_000 + IDENTITY_TOKEN_TTL_MS);
  const v = ca.verifyIdentity(token);
  assert.equal(v, { ok: true, value: alice });
  assert.equal(ca.verifyIdentity(token), { ok: false, reason: 'the identity token was already used' });
  const late = ca.issueIdentity(alice).token;
  now += IDENTITY_TOKEN_TTL_MS;
  assert.equal(ca.verifyIdentity(late), { ok: false, reason: 'the identity token expired' });
});

test('identity tokens of another key, tampered or of another kind are refused', () => {
  const ca = new CredentialAuthority(Buffer.alloc(32, 1));
  const other = new CredentialAuthority(Buffer.alloc(32, 2));
  const foreign = other.issueIdentity(alice).token;
  assert.match(
    String((ca.verifyIdentity(foreign) as { reason: string }).reason),
    'not issued by this traffic manager',
  );
  const { token } = ca.issueIdentity(alice);
  const [prefix, payload, mac] = token.split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Identity;
  const forged = Buffer.from(
    JSON.stringify({ ...claims, user: 'admin', groups: ['system:masters'] }),
  ).toString('base64url');
  assert.not.ok(ca.verifyIdentity(`${prefix}.${forged}.${mac}`).ok, 'a changed user breaks the signature');
  assert.not.ok(ca.verifyIdentity('').ok);
  assert.not.ok(ca.verifyIdentity(ca.sessionCredential('c-1')).ok, 'a session credential is no identity');
  assert.not.ok(ca.verifyIdentity('eyJhbGciOiJSUzI1NiJ9.e30.sig').ok, 'a Kubernetes token is no identity');
});

test("a session credential belongs to its session and to this manager's key", () => {
  const ca = new CredentialAuthority(Buffer.alloc(32, 1));
  const c1 = ca.sessionCredential('c-1');
  assert.ok(ca.verifySession('c-1', c1).ok);
  assert.equal(ca.verifySession('c-2', c1), {
    ok: false,
    reason: 'the credential is not the one of session c-2',
  });
  assert.equal(ca.verifySession('c-1', ''), { ok: false, reason: 'the call carries no session credential' });
  assert.not.ok(new CredentialAuthority(Buffer.alloc(32, 2)).verifySession('c-1', c1).ok);
  assert.not.ok(
    ca.verifySession('c-1', ca.issueIdentity(alice).token).ok,
    'an identity token opens no session',
  );
});

test('a resume token proves its user until it expires, again and again, at a manager with the same key', () => {
  let now = 5_000;
  const ca = new CredentialAuthority(Buffer.alloc(32, 1), () => now);
  const token = ca.issueResume(alice, 'c-1');
  assert.ok(CredentialAuthority.isResumeToken(token));
  assert.equal(ca.verifyResume(token), { ok: true, value: { identity: alice, sessionId: 'c-1' } });
  assert.ok(ca.verifyResume(token).ok, 'a client may need several tries to arrive');
  // A restarted manager reads the same key from its Secret: the token still works there.
  const restarted = new CredentialAuthority(Buffer.alloc(32, 1), () => now);
  assert.ok(restarted.verifyResume(token).ok);
  now += RESUME_TOKEN_TTL_MS;
  assert.equal(ca.verifyResume(token), { ok: false, reason: 'the resume token expired' });
});

test('resume tokens of another key, tampered or of another kind are refused', () => {
  const ca = new CredentialAuthority(Buffer.alloc(32, 1));
  const foreign = new CredentialAuthority(Buffer.alloc(32, 2)).issueResume(alice, 'c-1');
  assert.match(String((ca.verifyResume(foreign) as { reason: string }).reason), 'its key changed');
  const [prefix, payload, mac] = ca.issueResume(alice, 'c-1').split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Identity;
  const forged = Buffer.from(JSON.stringify({ ...claims, groups: ['system:masters'] })).toString('base64url');
  assert.not.ok(ca.verifyResume(`${prefix}.${forged}.${mac}`).ok, 'a changed group breaks the signature');
  assert.not.ok(ca.verifyResume(ca.issueIdentity(alice).token).ok, 'an identity token is no resume token');
  assert.not.ok(ca.verifyIdentity(ca.issueResume(alice, 'c-1')).ok, 'a resume token is no identity token');
  assert.not.ok(ca.verifyResume(ca.sessionCredential('c-1')).ok);
  assert.not.ok(ca.verifySession('c-1', ca.issueResume(alice, 'c-1')).ok, 'nor a session credential');
});

test.run();
