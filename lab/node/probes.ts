// Container probes (startup, liveness, readiness) as the kubelet runs them: thresholds and defaults
// (pure, ProbeTracker/probeTiming), and the checks themselves (httpGet, tcpSocket, exec) run from
// the node's network namespace against the pod's IP.
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import type { V1ContainerPort, V1Probe } from '@kubernetes/client-node';

export type ProbeKind = 'startup' | 'liveness' | 'readiness';

export interface ProbeTiming {
  initialDelayMs: number;
  periodMs: number;
  timeoutMs: number;
  successThreshold: number;
  failureThreshold: number;
}

/** The API's defaults; liveness and startup probes need exactly one success. */
export function probeTiming(probe: V1Probe, kind: ProbeKind): ProbeTiming {
  return {
    initialDelayMs: (probe.initialDelaySeconds ?? 0) * 1000,
    periodMs: Math.max(1, probe.periodSeconds ?? 10) * 1000,
    timeoutMs: Math.max(1, probe.timeoutSeconds ?? 1) * 1000,
    successThreshold: kind === 'readiness' ? Math.max(1, probe.successThreshold ?? 1) : 1,
    failureThreshold: Math.max(1, probe.failureThreshold ?? 3),
  };
}

/**
 * One probe's verdict over a container run: it flips after successThreshold consecutive successes or
 * failureThreshold consecutive failures. Readiness and startup start as failed (not yet proven),
 * liveness as passed. A new run of the container gets a new tracker.
 */
export class ProbeTracker {
  private successes = 0;
  private failures = 0;
  passing: boolean;

  constructor(
    readonly kind: ProbeKind,
    private readonly timing: Pick<ProbeTiming, 'successThreshold' | 'failureThreshold'>,
  ) {
    this.passing = kind === 'liveness';
  }

  /**
   * Records one check. Returns 'passed' or 'failed' when the verdict flips: a failed liveness or
   * startup probe means the container must be restarted.
   */
  record(success: boolean): 'passed' | 'failed' | undefined {
    if (success) {
      this.failures = 0;
      this.successes++;
      if (!this.passing && this.successes >= this.timing.successThreshold) {
        this.passing = true;
        return 'passed';
      }
      return undefined;
    }
    this.successes = 0;
    this.failures++;
    if (this.failures < this.timing.failureThreshold) return undefined;
    if (this.kind === 'startup') {
      this.failures = 0;
      return 'failed';
    }
    if (!this.passing) return undefined;
    this.passing = false;
    return 'failed';
  }
}

export interface ProbeOutcome {
  success: boolean;
  /** Why it failed, for the Unhealthy event. */
  message: string;
}

export interface ProbeTarget {
  podIP: string;
  /** The address probes come from (the node's IP), so the pod can tell kubelet probes apart. */
  sourceIP: string | undefined;
  ports: V1ContainerPort[];
  /** Runs a command in the container; resolves with its exit code (timeouts resolve as failure). */
  exec(command: string[], timeoutMs: number): Promise<{ exitCode: number; output: string }>;
  /** "kube-probe/1.34". */
  userAgent: string;
}

export function resolvePort(port: number | string, ports: V1ContainerPort[]): number {
  if (typeof port === 'number') return port;
  if (/^\d+$/.test(port)) return Number(port);
  const named = ports.find((p) => p.name === port);
  if (!named) throw new Error(`port "${port}" is not a named port of the container`);
  return named.containerPort;
}

function httpCheck(probe: NonNullable<V1Probe['httpGet']>, target: ProbeTarget, timeoutMs: number) {
  return new Promise<ProbeOutcome>((resolve) => {
    let port: number;
    try {
      port = resolvePort(probe.port as number | string, target.ports);
    } catch (err) {
      resolve({ success: false, message: (err as Error).message });
      return;
    }
    const host = probe.host || target.podIP;
    const headers: Record<string, string> = { 'User-Agent': target.userAgent, Accept: '*/*' };
    for (const h of probe.httpHeaders ?? []) headers[h.name] = h.value;
    const secure = (probe.scheme ?? 'HTTP').toUpperCase() === 'HTTPS';
    const path = probe.path ? (probe.path.startsWith('/') ? probe.path : `/${probe.path}`) : '/';
    const url = `${secure ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}${path}`;
    const options: https.RequestOptions = {
      host,
      port,
      path,
      method: 'GET',
      headers,
      localAddress: target.sourceIP,
      timeout: timeoutMs,
      rejectUnauthorized: false,
      agent: false,
    };
    const request = (secure ? https : http).request(options, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      // 3xx counts as success, as the kubelet does for redirects it does not follow.
      if (code >= 200 && code < 400) resolve({ success: true, message: '' });
      else resolve({ success: false, message: `HTTP probe failed with statuscode: ${code}` });
    });
    request.on('timeout', () => {
      request.destroy();
      resolve({
        success: false,
        message: `Get "${url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`,
      });
    });
    request.on('error', (err) => resolve({ success: false, message: `Get "${url}": ${err.message}` }));
    request.end();
  });
}

function tcpCheck(probe: NonNullable<V1Probe['tcpSocket']>, target: ProbeTarget, timeoutMs: number) {
  return new Promise<ProbeOutcome>((resolve) => {
    let port: number;
    try {
      port = resolvePort(probe.port as number | string, target.ports);
    } catch (err) {
      resolve({ success: false, message: (err as Error).message });
      return;
    }
    const host = probe.host || target.podIP;
    const socket = net.connect({ host, port, localAddress: target.sourceIP, timeout: timeoutMs });
    socket.on('connect', () => {
      socket.destroy();
      resolve({ success: true, message: '' });
    });
    socket.on('timeout', () => {
      socket.destroy();
      resolve({ success: false, message: `dial tcp ${host}:${port}: i/o timeout` });
    });
    socket.on('error', (err) =>
      resolve({ success: false, message: `dial tcp ${host}:${port}: ${err.message}` }),
    );
  });
}

export async function runProbe(
  probe: V1Probe,
  target: ProbeTarget,
  timeoutMs: number,
): Promise<ProbeOutcome> {
  if (probe.httpGet) return httpCheck(probe.httpGet, target, timeoutMs);
  if (probe.tcpSocket) return tcpCheck(probe.tcpSocket, target, timeoutMs);
  if (probe.exec) {
    const command = probe.exec.command ?? [];
    if (command.length === 0) return { success: false, message: 'exec probe has no command' };
    try {
      const { exitCode, output } = await target.exec(command, timeoutMs);
      if (exitCode === 0) return { success: true, message: '' };
      return { success: false, message: output.trim() || `command exited with ${exitCode}` };
    } catch (err) {
      return { success: false, message: (err as Error).message };
    }
  }
  if (probe.grpc) return { success: false, message: 'gRPC probes are not supported by the lab node agent' };
  return { success: false, message: 'probe has no handler' };
}
