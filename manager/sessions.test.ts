import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { remainIntervalMs, SessionRegistry } from './sessions.js';

const client = { name: 'alice@laptop', installId: 'i', version: '0.1.0', namespace: '' };
const agent = {
  name: 'echo',
  namespace: 'default',
  kind: 'Standalone',
  podName: 'echo-0',
  podIp: '127.0.0.1',
  version: '0.1.0',
  mechanism: 'none',
  containers: [],
  counters: undefined,
  directPort: 0,
};

test('sessions expire after their TTL of silence, heartbeats keep them', () => {
  let now = 0;
  const r = new SessionRegistry({ clientTtlMs: 3000, agentTtlMs: 15000 }, () => now);
  const c = r.arriveClient(client);
  const a = r.arriveAgent(agent);
  now = 2500;
  assert.ok(r.remain(c.id));
  now = 5000;
  assert.equal(r.expire(), []);
  now = 5600;
  assert.equal(
    r.expire().map((s) => s.id),
    [c.id],
  );
  assert.is(r.client(c.id), undefined);
  assert.ok(r.agent(a.id));
  now = 15_001;
  assert.equal(
    r.expire().map((s) => s.id),
    [a.id],
  );
});

test('an unknown session cannot heartbeat; depart forgets it', () => {
  const r = new SessionRegistry({ clientTtlMs: 3000, agentTtlMs: 3000 });
  assert.not.ok(r.remain('c-nope'));
  const c = r.arriveClient(client);
  assert.is(r.depart(c.id)?.id, c.id);
  assert.not.ok(r.remain(c.id));
  assert.is(r.depart(c.id), undefined);
});

test("a lost client session is gone but for its workstation's flows, until its linger ends; a departed one and an agent's do not linger", () => {
  let now = 0;
  const r = new SessionRegistry(
    { clientTtlMs: 3000, agentTtlMs: 3000, lostSessionLingerMs: 1000 },
    () => now,
  );
  const lost = r.arriveClient(client);
  const departed = r.arriveClient(client);
  const a = r.arriveAgent(agent);
  assert.is(r.lose(lost.id)?.id, lost.id);
  r.depart(departed.id);
  r.lose(a.id);
  assert.is(r.client(lost.id), undefined, 'gone for everything else');
  assert.not.ok(r.remain(lost.id));
  assert.is(r.forWorkstation(lost.id)?.id, lost.id);
  assert.is(r.forWorkstation(departed.id), undefined);
  assert.is(r.forWorkstation(a.id), undefined);
  now = 999;
  r.expire();
  assert.is(r.forWorkstation(lost.id)?.id, lost.id);
  now = 1000;
  assert.is(r.forWorkstation(lost.id), undefined);
  assert.equal(r.clients(), []);
});

test('sessions are kept apart by kind', () => {
  const r = new SessionRegistry({ clientTtlMs: 3000, agentTtlMs: 3000 });
  const c = r.arriveClient(client);
  const a = r.arriveAgent(agent);
  assert.is(r.agent(c.id), undefined);
  assert.is(r.client(a.id), undefined);
  assert.equal(
    r.agents().map((s) => s.id),
    [a.id],
  );
});

test('heartbeats come every 5 s, or three times per TTL when the TTL is short', () => {
  assert.is(remainIntervalMs(15_000), 5_000);
  assert.is(remainIntervalMs(60_000), 5_000);
  assert.is(remainIntervalMs(3_000), 1_000);
});

test.run();
