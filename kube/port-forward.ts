// Port-forward through the Kubernetes API server, the way kubectl does it: an HTTPS request to
// pods/NAME/portforward upgraded to SPDY/3.1 (portforward.k8s.io), then per forwarded connection an
// "error" and a "data" stream sharing a requestid. Every API server and kubelet speaks this (the
// WebSocket variants are newer and kubelets differ in which they accept), and it needs nothing from the
// cluster but the user's RBAC for pods/portforward.
//
// Backpressure both ways: a local socket that cannot take more pauses the SPDY connection, and a full
// SPDY connection pauses the local socket. No SPDY flow control (Go's spdystream never sends
// WINDOW_UPDATE, so honouring windows would stall).
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { CoreV1Api, type KubeConfig, type V1Pod, type V1Service } from '@kubernetes/client-node';
import type { Logger } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
// The SPDY/3.1 framing and header compression are shared with the lab's kubelet (server side).
import {
  encodeControlFrame,
  encodeDataFrameHeader,
  encodeRstStream,
  encodeSynStream,
  FLAG_FIN,
  FrameReader,
  FrameType,
  parseGoAway,
  parseRstStream,
  parseStreamHeaders,
} from '../spdy/frames.js';
import { HeaderBlockDecoder, HeaderBlockEncoder } from '../spdy/header-compression.js';
import { DEFAULT_MANAGER_NAMESPACE, MANAGER_SERVICE } from './annotations.js';
import { apiErrorCode, apiErrorMessage } from './kubeconfig.js';

const MAX_DATA_FRAME = 128 * 1024;
/**
 * Bytes a side may hold unwritten before it stops reading the other. A socket's own mark (16 KiB) paused
 * the reader after nearly every TLS record and cost an event-loop round trip per pause on bulk transfers;
 * this still bounds what one forwarded connection buffers.
 */
const MAX_BUFFERED = 1 << 20;

/** Writes to `to`; when `to` holds more than MAX_BUFFERED, pauses `from` until `to` has drained. */
function relayWrite(from: Duplex, to: Duplex, data: Buffer): void {
  to.write(data);
  if (to.writableLength > MAX_BUFFERED && !from.isPaused()) {
    from.pause();
    to.once('drain', () => from.resume());
  }
}
const UPGRADE_TIMEOUT_MS = 15_000;

/** Opens the SPDY connection for one port-forward session to a pod. */
async function upgrade(kc: KubeConfig, namespace: string, pod: string, port: number): Promise<Duplex> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new UsageError('the kubeconfig has no current cluster: pass --context');
  const url = new URL(
    `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/portforward`,
    cluster.server,
  );
  url.searchParams.set('ports', String(port));
  const opts: https.RequestOptions = {
    method: 'POST',
    headers: {
      Connection: 'Upgrade',
      Upgrade: 'SPDY/3.1',
      'X-Stream-Protocol-Version': 'portforward.k8s.io',
    },
    timeout: UPGRADE_TIMEOUT_MS,
  };
  await kc.applyToHTTPSOptions(opts);
  const request = (url.protocol === 'https:' ? https : http).request(url, opts);
  return new Promise<Duplex>((resolve, reject) => {
    request.on('upgrade', (res, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      if (res.headers['x-stream-protocol-version'] !== 'portforward.k8s.io') {
        socket.destroy();
        reject(
          new Error(
            `the API server did not agree to portforward.k8s.io (got ${res.headers['x-stream-protocol-version'] ?? 'none'})`,
          ),
        );
        return;
      }
      socket.setNoDelay(true);
      resolve(socket);
    });
    request.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => {
        let message = body.trim();
        try {
          message = (JSON.parse(body) as { message?: string }).message ?? message;
        } catch {
          // Not a Status.
        }
        reject(
          new Error(`port-forward to pod ${namespace}/${pod} refused (HTTP ${res.statusCode}): ${message}`),
        );
      });
    });
    request.on('timeout', () =>
      request.destroy(
        new Error(
          `the API server did not answer the port-forward request within ${UPGRADE_TIMEOUT_MS / 1000}s`,
        ),
      ),
    );
    request.on('error', reject);
    request.end();
  });
}

/**
 * Forwards one local socket to a pod's port over a fresh SPDY connection. Resolves once the data
 * stream is open; the socket is closed with the pod's error message if the kubelet cannot connect.
 */
export async function forwardSocket(
  kc: KubeConfig,
  namespace: string,
  pod: string,
  port: number,
  local: net.Socket,
  log: Logger,
): Promise<void> {
  const conn = await upgrade(kc, namespace, pod, port);
  const encoder = new HeaderBlockEncoder();
  const decoder = new HeaderBlockDecoder();
  const reader = new FrameReader({ streamData: true });
  const ERROR_STREAM = 1;
  const DATA_STREAM = 3;
  let errorText = '';
  let closed = false;
  let localEnded = false;
  let remoteEnded = false;

  const close = (why?: string) => {
    if (closed) return;
    closed = true;
    decoder.close();
    if (why) {
      log.debug('port-forward connection closed', { pod, port, reason: why });
      local.destroy(new Error(why));
    } else local.end();
    conn.destroy();
  };
  const headers = (streamtype: string) => ({ streamtype, port: String(port), requestid: '0' });
  conn.write(encodeSynStream(ERROR_STREAM, 0, encoder.encode(headers('error'))));
  conn.write(encodeSynStream(DATA_STREAM, 0, encoder.encode(headers('data'))));

  // Remote -> local.
  conn.on('data', (chunk: Buffer) => {
    reader.push(chunk);
    for (let frame = reader.next(); frame; frame = reader.next()) {
      if (!frame.control) {
        if (frame.streamId === DATA_STREAM) {
          if (frame.data.length > 0) relayWrite(conn, local, frame.data);
          if (frame.flags & FLAG_FIN) {
            remoteEnded = true;
            local.end();
            if (localEnded) close();
          }
        } else if (frame.streamId === ERROR_STREAM) {
          errorText += frame.data.toString('utf8');
          if (frame.flags & FLAG_FIN && errorText !== '')
            close(`port-forward to ${pod}:${port} failed: ${errorText.trim()}`);
        }
        continue;
      }
      switch (frame.type) {
        case FrameType.SynReply: {
          // Keep the shared decompression context in step; the reply's headers carry nothing we need.
          decoder
            .decode(parseStreamHeaders(frame.body).headerBlock)
            .catch((err: Error) => close(err.message));
          break;
        }
        case FrameType.RstStream: {
          const rst = parseRstStream(frame.body);
          close(`the API server reset the port-forward stream ${rst.streamId} (status ${rst.status})`);
          break;
        }
        case FrameType.Ping:
          conn.write(encodeControlFrame(FrameType.Ping, 0, frame.body));
          break;
        case FrameType.GoAway:
          parseGoAway(frame.body);
          if (!remoteEnded) close('the API server ended the port-forward session');
          break;
        case FrameType.SynStream:
          // The server never opens streams in port-forward; refuse politely.
          conn.write(encodeRstStream(frame.body.readUInt32BE(0) & 0x7fffffff, 3));
          break;
        default:
          // SETTINGS, WINDOW_UPDATE, HEADERS, NOOP: nothing to do.
          break;
      }
    }
  });
  conn.on('end', () => close(remoteEnded ? undefined : 'the port-forward connection ended'));
  conn.on('error', (err) => close(`port-forward connection failed: ${err.message}`));
  conn.on('close', () => close(remoteEnded && localEnded ? undefined : 'the port-forward connection closed'));

  // Local -> remote.
  local.on('data', (chunk: Buffer) => {
    // Each frame's header and payload leave in one write, not as a small record of their own.
    conn.cork();
    for (let offset = 0; offset < chunk.length; offset += MAX_DATA_FRAME) {
      const part = chunk.subarray(offset, offset + MAX_DATA_FRAME);
      conn.write(encodeDataFrameHeader(DATA_STREAM, 0, part.length));
      relayWrite(local, conn, part);
    }
    conn.uncork();
  });
  local.on('end', () => {
    localEnded = true;
    if (closed) return;
    conn.write(encodeDataFrameHeader(DATA_STREAM, FLAG_FIN, 0));
    // The error stream is ours to close too: the kubelet waits for both halves.
    conn.write(encodeDataFrameHeader(ERROR_STREAM, FLAG_FIN, 0));
    if (remoteEnded) close();
  });
  local.on('error', () => close('local connection failed'));
  local.on('close', () => {
    if (!closed) {
      closed = true;
      decoder.close();
      conn.destroy();
    }
  });
}

/** The pod behind a Service that is running and ready, and the container port its targetPort names. */
export async function readyPodBehindService(
  kc: KubeConfig,
  namespace: string,
  service: string,
  servicePortName?: string,
): Promise<{ pod: string; port: number }> {
  const core = kc.makeApiClient(CoreV1Api);
  let svc: V1Service;
  try {
    svc = await core.readNamespacedService({ name: service, namespace });
  } catch (err) {
    if (apiErrorCode(err) === 404)
      throw new UsageError(
        `no traffic manager in namespace ${namespace} (Service ${service} not found): install it with tp helm install (or pass --manager-namespace NS if it runs elsewhere)`,
      );
    throw new UsageError(`cannot read Service ${namespace}/${service}: ${apiErrorMessage(err)}`);
  }
  const selector = Object.entries(svc.spec?.selector ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const sp =
    svc.spec?.ports?.find((p) => !servicePortName || p.name === servicePortName) ?? svc.spec?.ports?.[0];
  if (!sp) throw new UsageError(`Service ${namespace}/${service} has no ports`);
  const pods = await core.listNamespacedPod({ namespace, labelSelector: selector });
  const ready = pods.items.filter(
    (p: V1Pod) =>
      !p.metadata?.deletionTimestamp &&
      p.status?.phase === 'Running' &&
      p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
  );
  if (ready.length === 0) {
    const states = pods.items.map((p) => `${p.metadata?.name} ${p.status?.phase}`).join(', ') || 'none';
    throw new UsageError(
      `the traffic manager in namespace ${namespace} has no ready pod (pods: ${states}): see kubectl get pods -n ${namespace}`,
    );
  }
  const pod = ready[0]!;
  const target = sp.targetPort ?? sp.port;
  let port = Number(target);
  if (!Number.isInteger(port)) {
    const named = pod.spec?.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === target);
    if (!named) throw new UsageError(`the manager pod declares no port named ${target}`);
    port = named.containerPort;
  }
  return { pod: pod.metadata!.name!, port };
}

export interface ManagerForward {
  /** 127.0.0.1:PORT: dial this to reach the traffic manager. */
  address: string;
  close(): Promise<void>;
}

/**
 * A local listener whose every connection is forwarded to the traffic manager's gRPC port through
 * the API server. The manager pod is looked up again for each connection, so a restarted manager is
 * reached as soon as its new pod is ready.
 */
export async function forwardToManager(
  kc: KubeConfig,
  log: Logger,
  namespace = DEFAULT_MANAGER_NAMESPACE,
): Promise<ManagerForward> {
  // Fail now, with a message, when there is no manager to reach.
  let target = await readyPodBehindService(kc, namespace, MANAGER_SERVICE, 'grpc');
  let targetAt = Date.now();
  const forward = await forwardingListener(kc, log, namespace, 'the traffic manager', {
    target: async () => {
      if (Date.now() - targetAt > 2000) {
        target = await readyPodBehindService(kc, namespace, MANAGER_SERVICE, 'grpc');
        targetAt = Date.now();
      }
      return target;
    },
    failed: () => {
      targetAt = 0;
    },
  });
  log.info('forwarding to the traffic manager through the API server', {
    namespace,
    pod: target.pod,
    address: forward.address,
  });
  return forward;
}

/** A local listener whose every connection is forwarded to `port` of one pod through the API server. */
export function forwardToPod(
  kc: KubeConfig,
  log: Logger,
  namespace: string,
  pod: string,
  port: number,
): Promise<ManagerForward> {
  return forwardingListener(kc, log, namespace, `pod ${namespace}/${pod} port ${port}`, {
    target: async () => ({ pod, port }),
    failed: () => {},
  });
}

/** Listens on 127.0.0.1 (a free port) and forwards each connection to where `how.target()` says. */
async function forwardingListener(
  kc: KubeConfig,
  log: Logger,
  namespace: string,
  what: string,
  how: { target: () => Promise<{ pod: string; port: number }>; failed: () => void },
): Promise<ManagerForward> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (local) => {
    sockets.add(local);
    local.on('close', () => sockets.delete(local));
    local.pause();
    void (async () => {
      try {
        const target = await how.target();
        const started = Date.now();
        await forwardSocket(kc, namespace, target.pod, target.port, local, log);
        log.debug(`forwarding a connection to ${what}`, {
          pod: target.pod,
          openedInMs: Date.now() - started,
        });
        local.resume();
      } catch (err) {
        how.failed();
        log.debug(`cannot forward to ${what}`, { error: (err as Error).message });
        local.destroy();
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
