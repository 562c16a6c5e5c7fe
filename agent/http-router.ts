// Personal intercepts: on an app port whose intercepts carry HTTP filters, the agent terminates HTTP on
// each captured connection and routes request by request: a request whose headers (and path) match an
// intercept's filter goes to that intercept's workstation through a tunnel flow, every other request to
// the app on loopback. Loaded (a dynamic import) only when a port has a personal intercept, so the plain
// passthrough path never pays for it.
//
//   first bytes   "PRI * HTTP/2.0..."  -> h2c: node:http2 server session on the socket; each stream to the
//                                         app's h2c session (one per connection) or the workstation's;
//                                         trailers kept (gRPC).
//                 an HTTP/1.x request line -> node:http server fed the socket; each request re-originated
//                                         over a keep-alive connection to the app (one per connection) or a
//                                         keep-alive pool of tunnel flows to the workstation; Upgrade
//                                         (WebSocket) requests hand the whole connection to their party.
//                 anything else, or the app speaking first -> plain passthrough of the bytes read plus the rest.
//
// The workstation side needs no HTTP awareness: each connection of a pool is its own tunnel flow, which
// the user daemon dials to the local port as for a global intercept.
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { type CompiledFilter, compileFilter } from '../http-filter/filter.js';
import { createLogger } from '../logging/logger.js';
import type { HttpFilter } from '../rpc/gen/manager.js';
import type { PortCounts } from './connection-counters.js';
import { socketPair } from './flow-socket.js';
import type { PersonalRoute } from './intercept-routes.js';

const log = createLogger('agent/http');

export interface PersonalPort {
  appPort: number;
  appHost: string;
  counts: PortCounts;
  /** The port's personal intercepts now: asked per request, so an ended intercept stops matching at once. */
  routes(): PersonalRoute[] | undefined;
  /** Opens a tunnel flow to the intercept's workstation; the returned end behaves like its socket. */
  openFlow(interceptId: string, client: net.Socket): net.Socket;
  /** Pipes the client to the app connection (the plain passthrough), after `head` was written to the app. */
  splice(client: net.Socket, app: net.Socket): void;
}

type Kind = 'h2' | 'http1' | 'other' | 'more';

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]+ HTTP\/1\.[01]\r?$/;
const METHOD_SO_FAR = /^[A-Z]{1,20}( [^ \r\n]*)?( [A-Z0-9/.]*)?\r?$/;
/** A request line longer than this is not one we route (node:http's own limit is larger). */
const MAX_SNIFF_BYTES = 8 * 1024;

/** What the first bytes of a connection say it is; 'more' while they do not tell yet. Pure. */
export function sniff(head: Buffer): Kind {
  const n = Math.min(head.length, H2_PREFACE.length);
  if (n > 0 && head.subarray(0, n).equals(H2_PREFACE.subarray(0, n)))
    return head.length >= H2_PREFACE.length ? 'h2' : 'more';
  const newline = head.indexOf(10);
  const line = head
    .subarray(0, newline < 0 ? Math.min(head.length, MAX_SNIFF_BYTES) : newline)
    .toString('latin1');
  if (newline >= 0) return REQUEST_LINE.test(line) ? 'http1' : 'other';
  return head.length < MAX_SNIFF_BYTES && METHOD_SO_FAR.test(line) ? 'more' : 'other';
}

const compiled = new WeakMap<HttpFilter, CompiledFilter>();
function routeOf(
  port: PersonalPort,
  url: string,
  header: (name: string) => string | string[] | undefined,
): string | undefined {
  for (const r of port.routes() ?? []) {
    let f = compiled.get(r.filter);
    if (!f) {
      f = compileFilter(r.filter);
      compiled.set(r.filter, f);
    }
    if (f.matches({ url, header })) return r.interceptId;
  }
  return undefined;
}

/**
 * Takes an accepted (paused) connection on a port with personal intercepts. The app is dialed at once, as
 * for a passthrough: a server that speaks first (SMTP, MySQL) decides for plain passthrough before the
 * client has said anything.
 */
export function routeConnection(client: net.Socket, port: PersonalPort): void {
  const app = net.connect({ host: port.appHost, port: port.appPort, allowHalfOpen: true, noDelay: true });
  let head: Buffer = Buffer.alloc(0);
  let decided = false;
  const decide = (kind: Exclude<Kind, 'more'>) => {
    decided = true;
    client.off('data', onData);
    client.off('end', onEnd);
    app.off('readable', onAppSpeaks);
    app.off('error', onEarlyAppError);
    client.pause();
    if (kind === 'other') {
      if (head.length) app.write(head);
      // An EOF already read does not come again for the splice's pump: pass it on here.
      const ended = client.readableEnded;
      port.splice(client, app);
      if (ended) app.end();
      app.resume();
      return;
    }
    if (kind === 'http1') {
      client.unshift(head);
      serveHttp1(client, app, port);
    } else serveH2c(client, head, app, port);
  };
  const onData = (chunk: Buffer) => {
    head = head.length ? Buffer.concat([head, chunk]) : chunk;
    const kind = sniff(head);
    if (kind !== 'more') decide(kind);
  };
  // EOF before the first bytes told anything: whatever it was, the app gets it as it came.
  const onEnd = () => {
    if (!decided) decide('other');
  };
  const onAppSpeaks = () => {
    if (!decided) decide('other');
  };
  const onEarlyAppError = () => {
    if (!decided) {
      port.counts.dialFailures++;
      client.resetAndDestroy();
    }
  };
  app.on('readable', onAppSpeaks);
  app.on('error', onEarlyAppError);
  client.on('data', onData);
  client.on('end', onEnd);
  client.resume();
}

// --- HTTP/1.x

interface Http1Connection {
  port: PersonalPort;
  client: net.Socket;
  /** Keep-alive to the app: the connection dialed at accept, then new ones as the app closes them. */
  app: http.Agent;
}

const http1Connections = new WeakMap<net.Socket, Http1Connection>();
let http1Server: http.Server | undefined;
/** Keep-alive pools of tunnel flows, one per personal intercept, shared by every client connection. */
const workstationPools = new Map<string, http.Agent>();

/** One HTTP/1 connection to the app: the first socket is the one dialed at accept. */
class AppAgent extends http.Agent {
  constructor(
    private first: net.Socket | undefined,
    private readonly target: { host: string; port: number },
  ) {
    super({ keepAlive: true, maxSockets: 1 });
  }
  override createConnection(): net.Socket {
    const s = this.first ?? net.connect({ ...this.target, noDelay: true });
    this.first = undefined;
    return s;
  }
}

class FlowAgent extends http.Agent {
  constructor(private readonly open: () => net.Socket) {
    super({ keepAlive: true });
  }
  override createConnection(): net.Socket {
    return this.open();
  }
}

function serveHttp1(client: net.Socket, app: net.Socket, port: PersonalPort): void {
  app.on('error', () => {}); // the request that uses it reports it
  const agent = new AppAgent(app, { host: port.appHost, port: port.appPort });
  http1Connections.set(client, { port, client, app: agent });
  client.once('close', () => agent.destroy());
  http1Server ??= createHttp1Server();
  http1Server.emit('connection', client);
  client.resume();
}

function createHttp1Server(): http.Server {
  // No timeouts of our own: the client and the app decide how long a connection or a request may take.
  const server = http.createServer({ requestTimeout: 0, headersTimeout: 0, keepAliveTimeout: 0 });
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const c = http1Connections.get(req.socket as net.Socket);
    if (!c) return void res.destroy();
    const interceptId = routeOf(c.port, req.url ?? '/', (n) => req.headers[n]);
    let agent: http.Agent = c.app;
    if (interceptId) {
      c.port.counts.intercepted++;
      agent = workstationPool(c.port, interceptId, c.client);
    }
    relayHttp1(req, res, agent, interceptId);
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, upgradeHead: Buffer) => {
    const c = http1Connections.get(socket);
    if (!c) return void socket.destroy();
    const interceptId = routeOf(c.port, req.url ?? '/', (n) => req.headers[n]);
    const target = interceptId
      ? c.port.openFlow(interceptId, c.client)
      : net.connect({ host: c.port.appHost, port: c.port.appPort, allowHalfOpen: true, noDelay: true });
    if (interceptId) c.port.counts.intercepted++;
    // The upgrade request as it came, then the connection whole to its party.
    const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    target.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (upgradeHead.length) target.write(upgradeHead);
    c.port.splice(socket, target);
  });
  server.on('clientError', (_e, socket: net.Socket) => socket.destroy());
  return server;
}

function workstationPool(port: PersonalPort, interceptId: string, client: net.Socket): http.Agent {
  let pool = workstationPools.get(interceptId);
  if (!pool) {
    pool = new FlowAgent(() => port.openFlow(interceptId, client));
    workstationPools.set(interceptId, pool);
  }
  // Pools of intercepts that ended: their idle flows are closed now.
  const live = new Set((port.routes() ?? []).map((r) => r.interceptId));
  for (const [id, p] of workstationPools)
    if (!live.has(id) && id !== interceptId) {
      p.destroy();
      workstationPools.delete(id);
    }
  return pool;
}

/** Headers that belong to one connection, not to the request (RFC 9110, 7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade']);

function endToEnd(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2)
    if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

function relayHttp1(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  agent: http.Agent,
  interceptId: string | undefined,
): void {
  const out = http.request({
    agent,
    method: req.method,
    path: req.url,
    headers: endToEnd(req.rawHeaders) as unknown as http.OutgoingHttpHeaders,
    setHost: false,
  });
  out.on('response', (r) => {
    res.writeHead(r.statusCode ?? 502, r.statusMessage, endToEnd(r.rawHeaders));
    r.on('data', (chunk: Buffer) => {
      if (!res.write(chunk)) r.pause();
    });
    res.on('drain', () => r.resume());
    r.on('end', () => {
      if (r.rawTrailers.length) res.addTrailers(pairs(r.rawTrailers));
      res.end();
    });
    r.on('error', () => res.destroy());
  });
  out.on('error', (e) => {
    log.debug('a routed request failed', { to: interceptId ?? 'app', reason: e.message });
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(
        interceptId
          ? `tp: the workstation of intercept ${interceptId} did not answer: ${e.message}\n`
          : `tp: the app did not answer: ${e.message}\n`,
      );
    } else res.destroy();
  });
  res.on('close', () => {
    if (!res.writableFinished) out.destroy();
  });
  req.pipe(out);
}

function pairs(raw: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

// --- HTTP/2 cleartext (prior knowledge), gRPC included

interface H2Connection {
  port: PersonalPort;
  client: net.Socket;
  app: http2.ClientHttp2Session;
}

const h2Connections = new WeakMap<http2.ServerHttp2Session, H2Connection>();
let h2Server: http2.Http2Server | undefined;
let pendingH2: H2Connection | undefined;
/** One h2c session per personal intercept to its workstation (one tunnel flow), shared by every stream. */
const workstationSessions = new Map<string, http2.ClientHttp2Session>();

function serveH2c(client: net.Socket, head: Buffer, app: net.Socket, port: PersonalPort): void {
  const appSession = http2.connect(`http://${port.appHost}:${port.appPort}`, { createConnection: () => app });
  appSession.on('error', () => {});
  // Node 20's server session reads a net.Socket's handle directly and would miss the bytes already read
  // (the preface): it gets an in-memory end that replays them, then the client's bytes.
  const [session, relay] = socketPair();
  relay.write(head);
  client.pipe(relay).pipe(client);
  client.on('error', () => relay.destroy());
  relay.on('error', () => client.resetAndDestroy());
  client.once('close', () => {
    relay.destroy();
    appSession.destroy();
  });
  h2Server ??= createH2Server();
  pendingH2 = { port, client, app: appSession };
  h2Server.emit('connection', session);
  pendingH2 = undefined;
  client.resume();
}

function createH2Server(): http2.Http2Server {
  const server = http2.createServer();
  server.on('session', (session) => {
    if (!pendingH2) return void session.destroy();
    h2Connections.set(session, pendingH2);
    session.on('error', () => {});
  });
  server.on('stream', (stream, headers) => {
    const c = h2Connections.get(stream.session as http2.ServerHttp2Session);
    if (!c) return void stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    const interceptId = routeOf(c.port, String(headers[':path'] ?? '/'), (n) => headers[n]);
    let target = c.app;
    if (interceptId) {
      c.port.counts.intercepted++;
      target = workstationSession(c.port, interceptId, c.client);
    }
    relayH2(stream, headers, target, interceptId);
  });
  return server;
}

function workstationSession(
  port: PersonalPort,
  interceptId: string,
  client: net.Socket,
): http2.ClientHttp2Session {
  const open = workstationSessions.get(interceptId);
  if (open && !open.closed && !open.destroyed) return open;
  const session = http2.connect('http://workstation', {
    createConnection: () => port.openFlow(interceptId, client),
  });
  session.on('error', (e) =>
    log.debug('workstation h2c session failed', { intercept: interceptId, reason: e.message }),
  );
  session.on('close', () => {
    if (workstationSessions.get(interceptId) === session) workstationSessions.delete(interceptId);
  });
  // Idle, it does not keep the agent's event loop alive, and it ends with its intercept.
  session.unref();
  workstationSessions.set(interceptId, session);
  const live = new Set((port.routes() ?? []).map((r) => r.interceptId));
  for (const [id, s] of workstationSessions)
    if (!live.has(id) && id !== interceptId) {
      s.close();
      workstationSessions.delete(id);
    }
  return session;
}

function relayH2(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  target: http2.ClientHttp2Session,
  interceptId: string | undefined,
): void {
  let out: http2.ClientHttp2Stream;
  try {
    out = target.request(copyHeaders(headers), { endStream: stream.readableEnded });
  } catch (e) {
    failH2(stream, interceptId, (e as Error).message);
    return;
  }
  let trailers: http2.OutgoingHttpHeaders | undefined;
  // 'response' is emitted a tick after the HEADERS frame, DATA may be emitted before it: the body is read
  // only once the response is sent (a write before respond() would send an implicit 200).
  out.pause();
  out.on('response', (h, flags) => {
    if (stream.destroyed || stream.headersSent) return;
    const endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    stream.respond(copyHeaders(h), endStream ? { endStream: true } : { waitForTrailers: true });
    if (endStream) return;
    out.on('data', (chunk: Buffer) => {
      if (!stream.write(chunk)) out.pause();
    });
    stream.on('drain', () => out.resume());
    out.on('end', () => {
      if (!stream.destroyed) stream.end();
    });
    out.resume();
  });
  out.on('trailers', (t) => {
    trailers = copyHeaders(t);
  });
  stream.on('wantTrailers', () => {
    // No trailers from the far side: an empty HEADERS frame ends the stream as cleanly.
    stream.sendTrailers(trailers ?? {});
  });
  stream.pipe(out);
  out.on('error', (e) => failH2(stream, interceptId, e.message));
  out.on('close', () => {
    if (!stream.destroyed && !stream.headersSent)
      failH2(stream, interceptId, `stream reset (${out.rstCode})`);
  });
  stream.on('close', () => {
    if (!out.destroyed) out.close(stream.rstCode || http2.constants.NGHTTP2_CANCEL);
  });
}

function failH2(stream: http2.ServerHttp2Stream, interceptId: string | undefined, reason: string): void {
  log.debug('a routed stream failed', { to: interceptId ?? 'app', reason });
  if (stream.destroyed) return;
  if (!stream.headersSent) {
    stream.respond({ ':status': 502, 'content-type': 'text/plain' });
    stream.end(
      `tp: ${interceptId ? `the workstation of intercept ${interceptId}` : 'the app'} did not answer: ${reason}\n`,
    );
  } else stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
}

function copyHeaders(h: http2.IncomingHttpHeaders): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k] = v;
  return out;
}
