// Raw gRPC calls to the traffic manager from inside a pod, as an attacker in the cluster would make them:
// the lab's shell image has node but no npm modules, so the pod runs a small HTTP/2 client (gRPC framing by
// hand, node:http2) and the test encodes the requests and decodes the answers with tp's own rpc/ code.
import {
  AgentInfo,
  ClientInfo,
  CreateInterceptRequest,
  type InterceptSpec,
  SessionInfo,
  TunnelMessage,
} from '../../rpc/gen/manager.js';
import { msg, streamInfo } from '../../tunnel/messages.js';

export interface RawCall {
  /** A label for the assertions. */
  name: string;
  /** gRPC method, e.g. ArriveAsClient. */
  method: string;
  /** The request message(s), encoded. */
  messages: Uint8Array[];
  /** Bidi or server streaming: keep the stream open and collect messages until the first one. */
  streaming: boolean;
  /** An "authorization: Bearer" token to send, if any. */
  token?: string;
}

export interface RawResult {
  name: string;
  /** grpc-status (0 OK, 16 UNAUTHENTICATED, 7 PERMISSION_DENIED, 5 NOT_FOUND); -1: none came. */
  status: number;
  message: string;
  /** Response messages, in order. */
  messages: Buffer[];
}

/**
 * The pod's client (CommonJS for `node -e`): argv[1] the manager's HOST:PORT, argv[2] the calls as JSON
 * (messages base64). Prints one JSON line per call.
 */
export const rawGrpcClientSource = `
const http2 = require('node:http2');
const [target, callsJson] = process.argv.slice(1);
const calls = JSON.parse(callsJson);
const frame = (b) => { const h = Buffer.alloc(5); h.writeUInt32BE(b.length, 1); return Buffer.concat([h, b]); };
function unframe(buf) {
  const out = [];
  while (buf.length >= 5) { const n = buf.readUInt32BE(1); if (buf.length < 5 + n) break; out.push(buf.subarray(5, 5 + n).toString('base64')); buf = buf.subarray(5 + n); }
  return out;
}
async function run(c) {
  const session = http2.connect('http://' + target);
  session.on('error', () => {});
  return new Promise((resolve) => {
    const headers = { ':method': 'POST', ':path': '/tp.manager.Manager/' + c.method, 'content-type': 'application/grpc', te: 'trailers' };
    if (c.token) headers.authorization = 'Bearer ' + c.token;
    const req = session.request(headers);
    const meta = {};
    let data = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return; done = true; clearTimeout(timer);
      resolve({ name: c.name, status: meta['grpc-status'] === undefined ? -1 : Number(meta['grpc-status']), message: decodeURIComponent(meta['grpc-message'] || ''), messages: unframe(data) });
      req.close(); session.close();
    };
    const timer = setTimeout(finish, 10000);
    req.on('response', (h) => Object.assign(meta, h));
    req.on('trailers', (t) => Object.assign(meta, t));
    req.on('data', (d) => { data = Buffer.concat([data, d]); if (c.streaming && unframe(data).length > 0) finish(); });
    req.on('end', finish);
    req.on('error', finish);
    for (const m of c.messages) req.write(frame(Buffer.from(m, 'base64')));
    if (!c.streaming || c.method !== 'Tunnel') req.end();
  });
}
(async () => { for (const c of calls) console.log(JSON.stringify(await run(c))); })();
`;

/** The argv for the pod: node -e SCRIPT TARGET CALLS. */
export function rawGrpcArgv(target: string, calls: RawCall[]): string[] {
  const json = JSON.stringify(
    calls.map((c) => ({ ...c, messages: c.messages.map((m) => Buffer.from(m).toString('base64')) })),
  );
  return ['node', '-e', rawGrpcClientSource, target, json];
}

export function parseRawResults(stdout: string): Map<string, RawResult> {
  const out = new Map<string, RawResult>();
  for (const line of stdout.split('\n').filter((l) => l.startsWith('{'))) {
    const r = JSON.parse(line) as Omit<RawResult, 'messages'> & { messages: string[] };
    out.set(r.name, { ...r, messages: r.messages.map((m) => Buffer.from(m, 'base64')) });
  }
  return out;
}

export function decodeTunnel(b: Buffer): TunnelMessage {
  return TunnelMessage.decode(b);
}

// The requests the scenarios send.
export const encode = {
  clientInfo: (name: string) =>
    ClientInfo.encode({ name, installId: 'attacker', version: '0.1.0', namespace: '' }).finish(),
  agentInfo: (info: Partial<AgentInfo>) =>
    AgentInfo.encode({
      name: '',
      namespace: '',
      kind: 'Deployment',
      podName: '',
      podIp: '',
      version: '0.1.0',
      mechanism: 'iptables',
      containers: [],
      counters: undefined,
      directPort: 0,
      ...info,
    }).finish(),
  session: (sessionId: string) => SessionInfo.encode({ sessionId, remainIntervalMs: 0 }).finish(),
  createIntercept: (sessionId: string, spec: Partial<InterceptSpec>) =>
    CreateInterceptRequest.encode({
      session: { sessionId, remainIntervalMs: 0 },
      spec: {
        name: '',
        workload: '',
        namespace: '',
        workloadKind: '',
        mechanism: 'tcp',
        remotePort: 0,
        portName: '',
        targetHost: '127.0.0.1',
        targetPort: 9,
        client: '',
        serviceName: '',
        ingest: false,
        container: '',
        httpFilter: undefined,
        ...spec,
      },
    }).finish(),
  /** A tunnel OPEN: outbound (dst), an agent's intercepted connection (interceptId), a dial answer (relayId). */
  tunnelOpen: (o: {
    sessionId: string;
    dstIp: string;
    dstPort: number;
    interceptId?: string;
    relayId?: string;
  }) =>
    TunnelMessage.encode(
      msg.open(
        streamInfo({
          connId: { protocol: 6, srcIp: '10.0.0.1', srcPort: 40000, dstIp: o.dstIp, dstPort: o.dstPort },
          sessionId: o.sessionId,
          interceptId: o.interceptId ?? '',
          relayId: o.relayId ?? '',
        }),
      ),
    ).finish(),
};
