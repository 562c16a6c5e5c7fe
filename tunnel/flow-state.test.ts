import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bothClosed, dialed, initialFlowState, receive, sendCloseSend } from './flow-state.js';
import { msg, streamInfo, type TunnelMessage } from './messages.js';

const info = streamInfo({ connId: undefined, sessionId: 's1' });

function run(phase: Parameters<typeof initialFlowState>[0], ...ms: TunnelMessage[]) {
  let s = initialFlowState(phase);
  const actions: string[] = [];
  for (const m of ms) {
    const t = receive(s, m);
    s = t.state;
    actions.push(t.action.kind === 'protocol-error' ? `protocol-error: ${t.action.reason}` : t.action.kind);
  }
  return { state: s, actions };
}

test('the answering end needs OPEN first', () => {
  assert.equal(run('awaiting-open', msg.open(info)).actions, ['open']);
  assert.equal(run('awaiting-open', msg.data(Buffer.from('x'))).actions, [
    'protocol-error: unexpected DATA while awaiting-open',
  ]);
  const noInfo = { ...msg.open(info), open: undefined };
  assert.equal(run('awaiting-open', noInfo).actions, ['protocol-error: OPEN without stream info']);
});

test('unknown codes are protocol errors, not crashes', () => {
  const weird = { ...msg.keepalive(), code: 42 };
  assert.equal(run('established', weird).actions, ['protocol-error: unexpected code 42 while established']);
  assert.equal(run('established', weird).state.phase, 'closed');
});

test('the originator waits for the dial, then data flows', () => {
  const r = run('awaiting-dial', msg.keepalive(), msg.dialOk(), msg.data(Buffer.from('hi')));
  assert.equal(r.actions, ['keepalive', 'dial-ok', 'data']);
  assert.is(r.state.phase, 'established');
  assert.equal(run('awaiting-dial', msg.data(Buffer.from('x'))).actions, [
    'protocol-error: unexpected DATA while awaiting-dial',
  ]);
  const rejected = run('awaiting-dial', msg.dialReject('connection refused'));
  assert.is(rejected.state.phase, 'closed');
});

test('the dialing end takes early data and its CLOSE_SEND, but no DIAL_OK or OPEN, until it has dialed', () => {
  assert.equal(run('dialing', msg.keepalive(), msg.reset('gave up')).actions, ['keepalive', 'reset']);
  const early = run('dialing', msg.data(Buffer.from('GET /')), msg.closeSend());
  assert.equal(early.actions, ['data', 'close-send']);
  assert.is(early.state.phase, 'dialing', 'still dialing: this end has sent nothing yet');
  const established = dialed(early.state);
  assert.is(established.phase, 'established');
  assert.ok(established.receivedCloseSend, 'the early CLOSE_SEND is kept once dialed');
  assert.equal(run('dialing', msg.closeSend(), msg.data(Buffer.from('x'))).actions, [
    'close-send',
    'protocol-error: DATA after CLOSE_SEND',
  ]);
  assert.equal(run('dialing', msg.dialOk()).actions, ['protocol-error: unexpected DIAL_OK while dialing']);
  assert.equal(run('dialing', msg.open(info)).actions, ['protocol-error: unexpected OPEN while dialing']);
});

test('half-close: the flow ends after both CLOSE_SENDs, in either order', () => {
  let s = initialFlowState('established');
  s = receive(s, msg.closeSend()).state;
  assert.is(s.phase, 'established');
  s = sendCloseSend(s);
  assert.is(s.phase, 'closed');
  assert.ok(bothClosed(s));

  let t = sendCloseSend(initialFlowState('established'));
  assert.is(t.phase, 'established');
  const after = receive(t, msg.data(Buffer.from('reply')));
  assert.is(after.action.kind, 'data', 'data still flows towards a side that closed its sending half');
  t = receive(after.state, msg.closeSend()).state;
  assert.is(t.phase, 'closed');
});

test('DATA after CLOSE_SEND and CLOSE_SEND twice are protocol errors', () => {
  assert.equal(run('established', msg.closeSend(), msg.data(Buffer.from('late'))).actions, [
    'close-send',
    'protocol-error: DATA after CLOSE_SEND',
  ]);
  assert.equal(run('established', msg.closeSend(), msg.closeSend()).actions, [
    'close-send',
    'protocol-error: CLOSE_SEND twice',
  ]);
});

test('messages after the end are ignored', () => {
  assert.equal(
    run('established', msg.reset('boom'), msg.data(Buffer.from('x')), msg.reset('again')).actions,
    ['reset', 'ignore', 'ignore'],
  );
});

test.run();
