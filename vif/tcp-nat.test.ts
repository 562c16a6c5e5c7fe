// The packet half of the TCP system stack, driven with hand-made packets (the kernel side is covered by the
// root daemon's netns test).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bytesToIp, ipToBytes } from '../netaddr/parse.js';
import { checksumOf, sumWords } from './checksum.js';
import {
  type ParsedPacket,
  PROTO_TCP,
  parsePacket,
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  tcpAck,
  tcpFlags,
} from './packet.js';
import { type FlowOffload, type OpenedFlow, type Rewrite, TcpNat } from './tcp-nat.js';

const CLIENT = '198.18.0.1';
const LISTENER_PORT = 40_001;

function tcp(src: string, sport: number, dst: string, dport: number, flags: number, seq = 1000): Buffer {
  const p = Buffer.alloc(40);
  p[0] = 0x45;
  p.writeUInt16BE(40, 2);
  p[8] = 64;
  p[9] = PROTO_TCP;
  ipToBytes(src).copy(p, 12);
  ipToBytes(dst).copy(p, 16);
  p.writeUInt16BE(checksumOf(sumWords(p, 0, 20)), 10);
  p.writeUInt16BE(sport, 20);
  p.writeUInt16BE(dport, 22);
  p.writeUInt32BE(seq, 24);
  p[32] = 5 << 4;
  p[33] = flags;
  let sum = sumWords(p, 12, 20) + PROTO_TCP + 20;
  sum = sumWords(p, 20, 40, sum);
  p.writeUInt16BE(checksumOf(sum), 36);
  return p;
}

/** A FlowOffload that records what it holds, as "src:port>dst:port" -> "src:port>dst:port". */
class RecordingOffload implements FlowOffload {
  readonly held = new Map<string, string>();
  full = false;
  add(forward: { from: Rewrite; to: Rewrite }, reverse: { from: Rewrite; to: Rewrite }): boolean {
    if (this.full) return false;
    this.held.set(text(forward.from), text(forward.to));
    this.held.set(text(reverse.from), text(reverse.to));
    return true;
  }
  remove(forward: Rewrite, reverse: Rewrite): void {
    assert.ok(this.held.delete(text(forward)), `removes only what it added: ${text(forward)}`);
    assert.ok(this.held.delete(text(reverse)), `removes only what it added: ${text(reverse)}`);
  }
}

function text(r: Rewrite): string {
  return `${bytesToIp(r.src)}:${r.srcPort}>${bytesToIp(r.dst)}:${r.dstPort}`;
}

function rig(offload?: FlowOffload) {
  const written: Buffer[] = [];
  const opened: OpenedFlow[] = [];
  const now = { t: 0 };
  const nat = new TcpNat(
    {
      4: {
        listenerAddress: ipToBytes(CLIENT),
        listenerPort: LISTENER_PORT,
        fakeAddresses: [ipToBytes('198.18.0.2'), ipToBytes('198.18.0.3')],
      },
    },
    (p) => {
      written.push(Buffer.from(p));
      return true;
    },
    (f) => opened.push(f),
    () => now.t,
    offload,
  );
  const send = (p: Buffer) => nat.handle(p, parsePacket(p)!);
  const last = () => {
    const p = written[written.length - 1]!;
    const info = parsePacket(p)!;
    return {
      p,
      info,
      src: `${bytesToIp(p.subarray(12, 16))}:${info.srcPort}`,
      dst: `${bytesToIp(p.subarray(16, 20))}:${info.dstPort}`,
    };
  };
  return { nat, written, opened, now, send, last };
}

test('a SYN is held while the destination is dialed, then goes to the listener from a fake peer', () => {
  const r = rig();
  r.send(tcp(CLIENT, 50000, '10.96.0.10', 80, TCP_SYN));
  r.send(tcp(CLIENT, 50000, '10.96.0.10', 80, TCP_SYN)); // a retransmit while dialing
  assert.is(r.written.length, 0, 'nothing reaches the listener before the dial');
  assert.is(r.opened.length, 1, 'one dial per flow');
  const f = r.opened[0]!;
  assert.equal([f.clientIp, f.clientPort, f.targetIp, f.targetPort], [CLIENT, 50000, '10.96.0.10', 80]);
  r.nat.dialed(f.key);
  const syn = r.last();
  assert.is(syn.src, `${f.fakeIp}:${f.fakePort}`);
  assert.is(syn.dst, `${CLIENT}:${LISTENER_PORT}`);
  // The listener's SYN-ACK goes back to the client as if from the destination.
  r.send(tcp(CLIENT, LISTENER_PORT, f.fakeIp, f.fakePort, TCP_SYN | TCP_ACK));
  assert.equal([r.last().src, r.last().dst], ['10.96.0.10:80', `${CLIENT}:50000`]);
  // Data from the client follows the same mapping.
  r.send(tcp(CLIENT, 50000, '10.96.0.10', 80, TCP_ACK));
  assert.equal([r.last().src, r.last().dst], [`${f.fakeIp}:${f.fakePort}`, `${CLIENT}:${LISTENER_PORT}`]);
  assert.is(r.nat.openFlows, 1);
});

test('a refused destination answers the SYN with RST|ACK and the flow is gone', () => {
  const r = rig();
  r.send(tcp(CLIENT, 50001, '10.96.0.10', 81, TCP_SYN, 7777));
  const f = r.opened[0]!;
  r.nat.rejected(f.key);
  const rst = r.last();
  assert.is(tcpFlags(rst.p, rst.info), TCP_RST | TCP_ACK);
  assert.is(tcpAck(rst.p, rst.info), 7778);
  assert.equal([rst.src, rst.dst], ['10.96.0.10:81', `${CLIENT}:50001`]);
  assert.is(r.nat.openFlows, 0);
  // The client's next attempt is a new flow, dialed again.
  r.send(tcp(CLIENT, 50001, '10.96.0.10', 81, TCP_SYN, 9999));
  assert.is(r.opened.length, 2);
});

test('segments of unknown flows are reset; replies to unknown fake peers are dropped', () => {
  const r = rig();
  r.send(tcp(CLIENT, 50003, '10.96.0.10', 80, TCP_ACK));
  const rst = r.last();
  assert.is(tcpFlags(rst.p, rst.info), TCP_RST);
  r.send(tcp(CLIENT, 50003, '10.96.0.10', 80, TCP_RST));
  assert.is(r.written.length, 1, 'a RST is never answered');
  r.send(tcp(CLIENT, LISTENER_PORT, '198.18.0.3', 4000, TCP_ACK));
  assert.is(r.written.length, 1);
  assert.is(r.nat.stats.dropped, 1);
});

test('a closed flow lingers for late packets, then is forgotten', () => {
  const r = rig();
  r.send(tcp(CLIENT, 50004, '10.96.0.10', 80, TCP_SYN));
  const f = r.opened[0]!;
  r.nat.dialed(f.key);
  r.nat.closed(f.key);
  assert.is(r.nat.openFlows, 0);
  r.now.t += 5_000;
  r.nat.sweep();
  r.send(tcp(CLIENT, 50004, '10.96.0.10', 80, TCP_ACK)); // a late ACK still gets through
  assert.is(r.last().dst, `${CLIENT}:${LISTENER_PORT}`);
  r.now.t += 60_000;
  r.nat.sweep();
  r.send(tcp(CLIENT, 50004, '10.96.0.10', 80, TCP_ACK));
  assert.is(tcpFlags(r.last().p, r.last().info as ParsedPacket), TCP_RST);
});

test('a flow is offloaded once its SYN went to the listener, both directions, and taken back when it leaves the table', () => {
  const offload = new RecordingOffload();
  const r = rig(offload);
  r.send(tcp(CLIENT, 50010, '10.96.0.10', 80, TCP_SYN));
  const f = r.opened[0]!;
  assert.is(offload.held.size, 0, 'not while the destination is dialed');
  r.nat.dialed(f.key);
  const fake = `${f.fakeIp}:${f.fakePort}`;
  assert.equal(
    [...offload.held],
    [
      [`${CLIENT}:50010>10.96.0.10:80`, `${fake}>${CLIENT}:${LISTENER_PORT}`],
      [`${CLIENT}:${LISTENER_PORT}>${fake}`, `10.96.0.10:80>${CLIENT}:50010`],
    ],
  );
  // What the offload does not rewrite (a FIN, or any packet it passed on) still comes here and is rewritten.
  r.send(tcp(CLIENT, 50010, '10.96.0.10', 80, TCP_ACK));
  assert.is(r.last().dst, `${CLIENT}:${LISTENER_PORT}`);
  r.nat.closed(f.key);
  r.now.t += 5_000;
  r.nat.sweep();
  assert.is(offload.held.size, 2, 'kept while the flow lingers');
  r.now.t += 60_000;
  r.nat.sweep();
  assert.is(offload.held.size, 0, 'gone with the flow');
});

test('a new SYN on a lingering flow takes the old one out of the offload; an abandoned flow goes too; a full offload keeps nothing', () => {
  const offload = new RecordingOffload();
  const r = rig(offload);
  r.send(tcp(CLIENT, 50011, '10.96.0.10', 80, TCP_SYN));
  r.nat.dialed(r.opened[0]!.key);
  r.nat.closed(r.opened[0]!.key);
  r.send(tcp(CLIENT, 50011, '10.96.0.10', 80, TCP_SYN, 5000));
  assert.is(offload.held.size, 0, 'the lingering flow was replaced');
  assert.is(r.opened.length, 2);
  r.nat.dialed(r.opened[1]!.key);
  assert.is(offload.held.size, 2);
  r.nat.abandoned(r.opened[1]!.key);
  assert.is(offload.held.size, 0);
  // A refused dial never reached the offload.
  r.send(tcp(CLIENT, 50012, '10.96.0.10', 81, TCP_SYN));
  r.nat.rejected(r.opened[2]!.key);
  assert.is(offload.held.size, 0);
  // Full: the flow stays with the worker, and leaving the table asks nothing of the offload.
  offload.full = true;
  r.send(tcp(CLIENT, 50013, '10.96.0.10', 80, TCP_SYN));
  r.nat.dialed(r.opened[3]!.key);
  r.send(tcp(CLIENT, 50013, '10.96.0.10', 80, TCP_ACK));
  assert.is(r.last().dst, `${CLIENT}:${LISTENER_PORT}`);
  r.nat.abandoned(r.opened[3]!.key);
  assert.is(offload.held.size, 0);
});

test.run();
