// The kubelet API the API server proxies to (HTTPS on <node-ip>:10250, client certificates checked
// against the cluster CA): container logs, exec and port-forward (SPDY/3.1 upgrades), and the
// small read-only endpoints (/healthz, /pods, /runningpods/).
import type * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../../logging/logger.js';
import { parseLogQuery, writeLog } from './container-logs.js';
import type { HostTools } from './container-process.js';
import { execInContainer } from './container-process.js';
import type { PodManager } from './pod-manager.js';
import { parseExecOptions, serveExec } from './streaming/exec.js';
import {
  EXEC_PROTOCOLS,
  errorResponse,
  isSpdyUpgrade,
  negotiateProtocol,
  offeredProtocols,
  PORT_FORWARD_PROTOCOLS,
  statusBody,
  switchingProtocolsResponse,
} from './streaming/handshake.js';
import { servePortForward } from './streaming/port-forward.js';
import { SpdySession } from './streaming/spdy-session.js';

export interface KubeletServerOptions {
  address: string;
  port: number;
  cert: Buffer;
  key: Buffer;
  clientCa: Buffer;
  pods: PodManager;
  tools: HostTools;
  log: Logger;
}

type Route =
  | { kind: 'logs'; namespace: string; pod: string; container: string }
  | { kind: 'exec'; namespace: string; pod: string; uid: string | undefined; container: string }
  | { kind: 'portForward'; namespace: string; pod: string; uid: string | undefined }
  | { kind: 'healthz' }
  | { kind: 'pods' }
  | { kind: 'runningpods' };

/** Maps a request path to an endpoint (the kubelet's routes, with and without the pod UID). */
export function route(pathname: string): Route | undefined {
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const [head, ...rest] = parts;
  switch (head) {
    case 'healthz':
      return rest.length === 0 ? { kind: 'healthz' } : undefined;
    case 'pods':
      return rest.length === 0 ? { kind: 'pods' } : undefined;
    case 'runningpods':
      return rest.length === 0 ? { kind: 'runningpods' } : undefined;
    case 'containerLogs':
      return rest.length === 3
        ? { kind: 'logs', namespace: rest[0]!, pod: rest[1]!, container: rest[2]! }
        : undefined;
    case 'exec':
      if (rest.length === 3)
        return { kind: 'exec', namespace: rest[0]!, pod: rest[1]!, uid: undefined, container: rest[2]! };
      if (rest.length === 4)
        return { kind: 'exec', namespace: rest[0]!, pod: rest[1]!, uid: rest[2]!, container: rest[3]! };
      return undefined;
    case 'portForward':
      if (rest.length === 2)
        return { kind: 'portForward', namespace: rest[0]!, pod: rest[1]!, uid: undefined };
      if (rest.length === 3)
        return { kind: 'portForward', namespace: rest[0]!, pod: rest[1]!, uid: rest[2]! };
      return undefined;
    default:
      return undefined;
  }
}

function sendStatus(res: http.ServerResponse, code: number, message: string): void {
  res.writeHead(code, { 'Content-Type': 'application/json' });
  res.end(statusBody(code, message));
}

export function startKubeletServer(o: KubeletServerOptions): Promise<https.Server> {
  const log = o.log;
  const server = https.createServer({
    cert: o.cert,
    key: o.key,
    ca: o.clientCa,
    requestCert: true,
    rejectUnauthorized: true,
  });

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', 'https://kubelet');
    const r = route(url.pathname);
    log.debug('request', { method: req.method, path: url.pathname });
    if (!r) return sendStatus(res, 404, `the server could not find the requested resource (${url.pathname})`);
    switch (r.kind) {
      case 'healthz':
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('ok');
        return;
      case 'pods':
      case 'runningpods': {
        let items = o.pods.list();
        if (r.kind === 'runningpods') items = items.filter((p) => p.status?.phase === 'Running');
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: {}, items }));
        return;
      }
      case 'exec':
      case 'portForward':
        return sendStatus(res, 400, 'Upgrade request required');
      case 'logs':
        void serveLogs(r, url, req, res);
        return;
    }
  });

  async function serveLogs(
    r: Extract<Route, { kind: 'logs' }>,
    url: URL,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    const worker = o.pods.findPod(r.namespace, r.pod);
    if (!worker) return sendStatus(res, 404, `pod "${r.pod}" not found`);
    const query = parseLogQuery(url.searchParams);
    const source = worker.logSource(r.container, query.previous);
    if (typeof source === 'string') return sendStatus(res, 400, source);
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Transfer-Encoding': 'chunked' });
    const abort = new AbortController();
    req.on('close', () => abort.abort());
    try {
      await writeLog(source.file, query, res, source.isActive, abort.signal);
    } catch (err) {
      log.warn('serving logs failed', { error: err });
    }
    res.end();
  }

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (err) => log.debug('upgraded connection error', { error: err }));
    const url = new URL(req.url ?? '/', 'https://kubelet');
    const r = route(url.pathname);
    if (!r || (r.kind !== 'exec' && r.kind !== 'portForward')) {
      socket.end(errorResponse(404, `the server could not find the requested resource (${url.pathname})`));
      return;
    }
    if (!isSpdyUpgrade(req.headers)) {
      socket.end(errorResponse(400, 'unable to upgrade: only SPDY/3.1 is supported'));
      return;
    }
    const worker = o.pods.findPod(r.namespace, r.pod);
    if (!worker || (r.uid !== undefined && r.uid !== worker.uid)) {
      socket.end(errorResponse(404, `pod "${r.pod}" not found`));
      return;
    }
    const supported = r.kind === 'exec' ? EXEC_PROTOCOLS : PORT_FORWARD_PROTOCOLS;
    const negotiation = negotiateProtocol(
      offeredProtocols(req.headers['x-stream-protocol-version']),
      supported,
    );
    if (!negotiation.ok) {
      socket.end(errorResponse(negotiation.status, negotiation.message, negotiation.headers));
      return;
    }
    const sessionLog = log.child(`${r.kind} ${r.namespace}/${r.pod}`);
    if (r.kind === 'exec') {
      const options = parseExecOptions(url.searchParams);
      if ('error' in options) {
        socket.end(errorResponse(400, options.error));
        return;
      }
      const target = worker.execTarget(r.container);
      if (typeof target === 'string') {
        socket.end(errorResponse(400, target));
        return;
      }
      socket.write(switchingProtocolsResponse(negotiation.protocol));
      if (head.length) socket.unshift(head);
      const session = new SpdySession(socket, { log: sessionLog });
      serveExec(
        session,
        negotiation.protocol,
        options,
        (command) => execInContainer(target, command, o.tools),
        sessionLog,
      );
      return;
    }
    const podIP = worker.ip;
    if (!podIP) {
      socket.end(errorResponse(400, `pod ${r.pod} has no IP address yet`));
      return;
    }
    socket.write(switchingProtocolsResponse(negotiation.protocol));
    if (head.length) socket.unshift(head);
    const session = new SpdySession(socket, { log: sessionLog });
    servePortForward(
      session,
      {
        podName: `${r.namespace}/${r.pod}`,
        podUid: worker.uid,
        // From the node's namespace to the pod's IP: the route to the pod network is the bridge.
        dial: (port) => net.connect({ host: podIP, port }),
      },
      sessionLog,
    );
  });

  server.on('tlsClientError', (err) => log.debug('TLS handshake failed', { error: err }));

  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new Error(
          `the kubelet API cannot listen on ${o.address}:${o.port}: ${err.code === 'EADDRNOTAVAIL' ? 'this address is not on any interface of the node namespace (check --node-ip)' : err.message}`,
        ),
      );
    });
    server.listen(o.port, o.address, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => log.error('kubelet API server error', { error: err }));
      resolve(server);
    });
  });
}
