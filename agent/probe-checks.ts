// Performs an app's original kubelet probe, as the kubelet would, against the app on loopback: the way
// passthrough reaches the app, never captured (the iptables rules exempt loopback and the agent's UID;
// eBPF never steers loopback), so it never goes near an intercept or a workstation. The semantics are in
// kubelet-probe.ts; this file does the I/O.
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { formatHostPort } from '../netaddr/parse.js';
import type { AppProbe } from '../probes/spec.js';
import { dialTcp } from '../tunnel/dial.js';
import {
  decodeHealthCheckResponse,
  encodeHealthCheckRequest,
  HEALTH_CHECK_METHOD,
  servingStatusName,
} from './grpc-health.js';
import {
  httpProbeSucceeds,
  MAX_PROBE_BODY_BYTES,
  type ProbeRequest,
  probeBudgetMs,
  probeRequest,
  redirectStep,
} from './kubelet-probe.js';

export interface ProbeResult {
  ok: boolean;
  /** One line: what was checked and what came back. */
  message: string;
}

export interface ProbeContext {
  /** The pod's IP: the host the kubelet would have probed (URL, Host header, gRPC authority). */
  podIp: string;
  /** The User-Agent to send (kubelet-probe.ts probeUserAgent). */
  userAgent: string;
}

/** Runs one original probe; never rejects. */
export async function performProbe(probe: AppProbe, context: ProbeContext): Promise<ProbeResult> {
  const budgetMs = probeBudgetMs(probe.timeoutSeconds);
  const loopback = net.isIPv6(context.podIp) ? '::1' : '127.0.0.1';
  const timedOut = `no answer within ${budgetMs} ms (the probe's timeoutSeconds is ${probe.timeoutSeconds})`;
  if ('httpGet' in probe) {
    const first = probeRequest(probe.httpGet, context.podIp, context.userAgent);
    return httpProbe(first, loopback, budgetMs, timedOut);
  }
  if ('tcpSocket' in probe) {
    const where = formatHostPort(loopback, probe.tcpSocket.port);
    try {
      (await dialTcp(loopback, probe.tcpSocket.port, budgetMs)).destroy();
      return { ok: true, message: `tcp ${where}: connected` };
    } catch (e) {
      return { ok: false, message: `tcp ${where}: ${(e as Error).message}` };
    }
  }
  return grpcProbe(probe.grpc, loopback, context, budgetMs);
}

async function httpProbe(
  first: ProbeRequest,
  loopback: string,
  budgetMs: number,
  timedOut: string,
): Promise<ProbeResult> {
  const signal = AbortSignal.timeout(budgetMs);
  let current = first;
  for (let requests = 1; ; requests++) {
    const what = `GET ${current.url.href}`;
    let answer: { status: number; location: string | undefined };
    try {
      answer = await httpOnce(current, loopback, signal);
    } catch (e) {
      return { ok: false, message: `${what}: ${signal.aborted ? timedOut : reason(e, current, loopback)}` };
    }
    const step = redirectStep(answer.status, answer.location, current, first, requests);
    if (step.follow) {
      current = { url: step.url, host: step.host, headers: first.headers };
      continue;
    }
    if ('failure' in step) return { ok: false, message: `${what}: ${step.failure}` };
    const ok = httpProbeSucceeds(answer.status);
    const redirected = answer.status >= 300 && ok ? ' (a redirect the kubelet does not follow)' : '';
    return { ok, message: `${what}: status ${answer.status}${redirected}` };
  }
}

/** One request to the app on loopback; resolves once at most 10 KiB of the body is read. */
function httpOnce(
  req: ProbeRequest,
  loopback: string,
  signal: AbortSignal,
): Promise<{ status: number; location: string | undefined }> {
  return new Promise((resolve, reject) => {
    const secure = req.url.protocol === 'https:';
    const options: https.RequestOptions = {
      host: loopback,
      port: Number(req.url.port) || (secure ? 443 : 80),
      method: 'GET',
      path: `${req.url.pathname}${req.url.search}`,
      headers: ['Host', req.host, ...req.headers.flat()],
      setHost: false,
      agent: false,
      signal,
    };
    // The kubelet does not verify the app's certificate, and sends no SNI for the pod's IP.
    const request = secure
      ? https.request({ ...options, rejectUnauthorized: false, servername: '' })
      : http.request(options);
    request.on('error', reject);
    request.on('response', (res) => {
      const answer = { status: res.statusCode ?? 0, location: res.headers.location };
      let read = 0;
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read < MAX_PROBE_BODY_BYTES) return;
        resolve(answer);
        res.destroy();
      });
      res.on('end', () => resolve(answer));
      res.on('error', reject);
      // Cut short (the app closed, or the budget ran out): settled already when the body was complete.
      res.on('close', () => reject(new Error('the answer was cut short')));
    });
    request.end();
  });
}

function reason(e: unknown, req: ProbeRequest, loopback: string): string {
  const err = e as NodeJS.ErrnoException;
  const where = formatHostPort(loopback, Number(req.url.port) || (req.url.protocol === 'https:' ? 443 : 80));
  if (err.code === 'ECONNREFUSED') return `connection refused by ${where}`;
  if (err.code === 'ECONNRESET') return `connection reset by ${where}`;
  return err.message;
}

function grpcProbe(
  target: { port: number; service: string },
  loopback: string,
  context: ProbeContext,
  budgetMs: number,
): Promise<ProbeResult> {
  const address = formatHostPort(loopback, target.port);
  const what = `grpc ${address} service "${target.service}"`;
  const client = new grpc.Client(
    `${net.isIPv6(loopback) ? 'ipv6' : 'ipv4'}:${address}`,
    grpc.credentials.createInsecure(),
    {
      'grpc.primary_user_agent': context.userAgent,
      // What the kubelet would send as :authority: the pod's address.
      'grpc.default_authority': formatHostPort(context.podIp, target.port),
      // A channel of its own, closed after the check, like the kubelet's connection per probe.
      'grpc.use_local_subchannel_pool': 1,
    },
  );
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      HEALTH_CHECK_METHOD,
      encodeHealthCheckRequest,
      decodeHealthCheckResponse,
      target.service,
      new grpc.Metadata(),
      { deadline: Date.now() + budgetMs },
      (err, status) => {
        client.close();
        if (err) {
          const code = grpc.status[err.code] ?? String(err.code);
          if (err.code === grpc.status.UNIMPLEMENTED)
            resolve({
              ok: false,
              message: `${what}: the app does not implement the gRPC health protocol (grpc.health.v1.Health): ${err.details}`,
            });
          else if (err.code === grpc.status.DEADLINE_EXCEEDED)
            resolve({ ok: false, message: `${what}: no answer within ${budgetMs} ms` });
          else resolve({ ok: false, message: `${what}: health check failed: ${code}: ${err.details}` });
          return;
        }
        const name = servingStatusName(status ?? 0);
        resolve({ ok: status === 1, message: `${what}: ${name}` });
      },
    );
  });
}
