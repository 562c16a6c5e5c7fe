// Test fixture: a small authoritative DNS server over UDP and TCP, answering from a static zone. It plays
// "the workstation's original resolver" and "the cluster's DNS" in the tests. Run as a process:
//   node dist/testbed/zone-server.js --listen 10.210.0.2:53 --zone '{"echo.default.svc.cluster.local.":{"A":["10.96.0.10"]}}'
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import {
  addressRecord,
  buildResponse,
  canonicalName,
  decodeMessage,
  encodeMessage,
  RCODE,
  TYPE,
} from '../dns/wire.js';

/** name (canonical) -> addresses and TXT strings. */
export type Zone = Record<string, { A?: string[]; AAAA?: string[]; TXT?: string[] }>;

export interface ZoneServer {
  port: number;
  /** Every question seen, "TYPE name". */
  seen: string[];
  close(): void;
}

export function answerFromZone(zone: Zone, query: Buffer): Buffer | undefined {
  let m: ReturnType<typeof decodeMessage>;
  try {
    m = decodeMessage(query);
  } catch {
    return undefined;
  }
  const q = m.questions[0];
  if (!q) return encodeMessage(buildResponse(m, RCODE.FORMERR, []));
  const entry = zone[canonicalName(q.name)];
  if (!entry) return encodeMessage(buildResponse(m, RCODE.NXDOMAIN, [], { authoritative: true }));
  const answers = [];
  if (q.type === TYPE.A) for (const ip of entry.A ?? []) answers.push(addressRecord(q.name, ip, 30));
  if (q.type === TYPE.AAAA) for (const ip of entry.AAAA ?? []) answers.push(addressRecord(q.name, ip, 30));
  if (q.type === TYPE.TXT)
    for (const t of entry.TXT ?? [])
      answers.push({
        name: q.name,
        type: TYPE.TXT,
        class: 1,
        ttl: 30,
        data: Buffer.from([t.length, ...Buffer.from(t)]),
      });
  return encodeMessage(buildResponse(m, RCODE.NOERROR, answers, { authoritative: true }));
}

export async function startZoneServer(host: string, port: number, zone: Zone): Promise<ZoneServer> {
  const seen: string[] = [];
  const note = (query: Buffer) => {
    try {
      const q = decodeMessage(query).questions[0];
      if (q) seen.push(`${q.type === TYPE.A ? 'A' : q.type === TYPE.AAAA ? 'AAAA' : q.type} ${q.name}`);
    } catch {
      // counted as nothing
    }
  };
  // UDP and TCP share one port number. With port 0 the UDP port is chosen first and its TCP twin may be
  // taken by another process: then try another pair.
  for (let attempt = 0; ; attempt++) {
    try {
      return await listenPair(host, port, zone, note, seen);
    } catch (err) {
      if (port !== 0 || attempt >= 20 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
}

async function listenPair(
  host: string,
  port: number,
  zone: Zone,
  note: (query: Buffer) => void,
  seen: string[],
): Promise<ZoneServer> {
  const udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(port, host, () => resolve());
  });
  const bound = udp.address().port;
  udp.on('message', (query, rinfo) => {
    note(query);
    const answer = answerFromZone(zone, query);
    if (answer) udp.send(answer, rinfo.port, rinfo.address);
  });
  const tcp = net.createServer((c) => {
    c.on('error', () => {});
    let pending = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const query = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + query.length);
        note(query);
        const answer = answerFromZone(zone, query);
        if (answer) {
          const len = Buffer.alloc(2);
          len.writeUInt16BE(answer.length);
          c.write(Buffer.concat([len, answer]));
        }
      }
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(bound, host, () => resolve());
    });
  } catch (err) {
    udp.close();
    throw err;
  }
  return {
    port: bound,
    seen,
    close: () => {
      udp.close();
      tcp.close();
    },
  };
}

// As a process (netns tests): --listen HOST:PORT --zone JSON
if (process.argv[1]?.endsWith('zone-server.js') && process.argv.includes('--listen')) {
  const arg = (name: string) => process.argv[process.argv.indexOf(name) + 1]!;
  const [host, port] = arg('--listen').split(/:(?=\d+$)/) as [string, string];
  const zone = JSON.parse(arg('--zone')) as Zone;
  const server = await startZoneServer(host, Number(port), zone);
  process.stdout.write(`listening ${server.port}\n`);
  process.on('SIGTERM', () => process.exit(0));
}
