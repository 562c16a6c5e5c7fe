// The agent's probe server (TP_PROBE_PORT). The webhook rewrote the kubelet's HTTP, TCP and gRPC probes of
// captured app ports to `GET /tp-probe/<container>/<kind>` here; for each, the agent performs the original
// probe against the app on loopback (probe-checks.ts) and answers 200, or 503 with a one-line reason. The
// port is never captured, so a probe is never forwarded to a workstation, wherever the kubelet probes
// from. `GET /tp-probe/agent` is the agent's own readiness: 200 once its listeners are up.
import * as http from 'node:http';
import { ENV } from '../agentconfig/env.js';
import { createLogger } from '../logging/logger.js';
import { type AppProbe, parseProbePath } from '../probes/spec.js';
import type { ConnectionCounters } from './connection-counters.js';
import { probeUserAgent } from './kubelet-probe.js';
import { listenOnPort } from './listen.js';
import { performProbe } from './probe-checks.js';

const log = createLogger('agent/probes');

export interface ProbeServerOptions {
  port: number;
  /** Empty: every address (dual-stack). */
  listenAddress: string;
  podIp: string;
  probes: AppProbe[];
  counters: ConnectionCounters;
  /** Whether the agent's listeners are up (its own readiness). */
  listening: () => boolean;
}

export class ProbeServer {
  private readonly server: http.Server;
  private readonly probes = new Map<string, AppProbe>();
  /** The last outcome of each probe, to log when it changes rather than every period. */
  private readonly lastOk = new Map<string, boolean>();

  constructor(private readonly o: ProbeServerOptions) {
    for (const p of o.probes) this.probes.set(`${p.container}/${p.kind}`, p);
    this.server = http.createServer((req, res) => void this.answer(req, res));
    // The kubelet opens a connection per probe; nothing should linger.
    this.server.keepAliveTimeout = 1_000;
  }

  async listen(): Promise<void> {
    const { port, listenAddress } = this.o;
    const host = await listenOnPort(this.server, port, listenAddress, `probe port ${port}`);
    log.info('probe server listening', { port, address: host, probes: [...this.probes.keys()].join(',') });
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }

  private async answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const target = parseProbePath(req.url ?? '');
    if (req.method !== 'GET') return reply(res, 405, `${req.method} is not answered here: use GET`);
    if (!target) return reply(res, 404, `no probe at ${req.url}: the paths are /tp-probe/<container>/<kind>`);
    if (target.agent) {
      if (this.o.listening()) return reply(res, 200, 'tp-agent: listening');
      return reply(res, 503, 'tp-agent: its listeners are not up');
    }
    const id = `${target.container}/${target.kind}`;
    const probe = this.probes.get(id);
    if (!probe) {
      const known = [...this.probes.keys()].join(', ') || 'none';
      return reply(res, 404, `no rewritten probe ${id} in this pod (${ENV.probes} has ${known})`);
    }
    const result = await performProbe(probe, {
      podIp: this.o.podIp,
      userAgent: probeUserAgent(req.headers['user-agent']),
    });
    const counts = this.o.counters.probe(id);
    counts.performed++;
    if (!result.ok) counts.failed++;
    if (this.lastOk.get(id) !== result.ok) {
      if (result.ok) log.info(`probe ${id} passes`, { check: result.message });
      else log.info(`probe ${id} fails`, { reason: result.message });
      this.lastOk.set(id, result.ok);
    } else if (log.enabled('debug')) log.debug(`probe ${id}`, { ok: result.ok, check: result.message });
    reply(res, result.ok ? 200 : 503, `${id}: ${result.message}`);
  }
}

function reply(res: http.ServerResponse, status: number, line: string): void {
  if (res.destroyed) return;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
  res.end(`${line}\n`);
}
