// Sending a query to an upstream DNS server and getting its answer back, over UDP (a fresh socket per
// query: a random source port, and no id clashes between clients) or TCP (RFC 7766 framing).
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { formatHostPort } from '../netaddr/parse.js';
import { RCODE } from './wire.js';

export interface Upstream {
  address: string;
  port: number;
}

/** Per upstream server; glibc waits 5 s per server, so a dead first server must not eat all of it. */
export const UPSTREAM_TIMEOUT_MS = 2_000;

/**
 * Sends the query to each upstream in turn until one answers with something other than SERVFAIL or
 * REFUSED (the last answer is returned if none does); rejects when none answers at all.
 */
export async function forwardQuery(
  query: Buffer,
  id: number,
  upstreams: Upstream[],
  transport: 'udp' | 'tcp',
  timeoutMs = UPSTREAM_TIMEOUT_MS,
): Promise<Buffer> {
  let last: Buffer | undefined;
  const errors: string[] = [];
  for (const u of upstreams) {
    try {
      const answer =
        transport === 'udp' ? await viaUdp(query, id, u, timeoutMs) : await viaTcp(query, u, timeoutMs);
      const rcode = answer.length >= 4 ? answer.readUInt16BE(2) & 0xf : RCODE.SERVFAIL;
      if (rcode !== RCODE.SERVFAIL && rcode !== RCODE.REFUSED) return answer;
      last = answer;
    } catch (e) {
      errors.push(`${formatHostPort(u.address, u.port)}: ${(e as Error).message}`);
    }
  }
  if (last) return last;
  throw new Error(`no upstream DNS server answered (${errors.join('; ')})`);
}

function viaUdp(query: Buffer, id: number, u: Upstream, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(u.address.includes(':') ? 'udp6' : 'udp4');
    const done = (error?: Error, answer?: Buffer) => {
      clearTimeout(timer);
      socket.close();
      if (answer) resolve(answer);
      else reject(error);
    };
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (e) => done(e));
    socket.on('message', (answer, rinfo) => {
      // Only the server we asked, and only the answer to our id (a late answer to an earlier try is not).
      if (rinfo.port !== u.port || answer.length < 12 || answer.readUInt16BE(0) !== id) return;
      done(undefined, answer);
    });
    socket.connect(u.port, u.address, () => socket.send(query, (e) => e && done(e)));
  });
}

function viaTcp(query: Buffer, u: Upstream, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: u.address, port: u.port });
    let received = Buffer.alloc(0);
    const done = (error?: Error, answer?: Buffer) => {
      clearTimeout(timer);
      socket.destroy();
      if (answer) resolve(answer);
      else reject(error);
    };
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (e) => done(e));
    socket.on('connect', () => {
      const frame = Buffer.alloc(2);
      frame.writeUInt16BE(query.length);
      socket.write(Buffer.concat([frame, query]));
    });
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0))
        done(undefined, received.subarray(2, 2 + received.readUInt16BE(0)));
    });
    socket.on('end', () => done(new Error('the server closed the connection without an answer')));
  });
}
