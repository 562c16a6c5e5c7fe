// The agent's counters reach the manager (ReportAgentCounters): `tp list -o json` and `tp describe` show
// them per pod, the manager's metrics sum them. Sent every 10 s while they change, and once after each
// arrival (a restarted manager knows nothing), never while there is no session.
import { createLogger } from '../logging/logger.js';
import type { AgentCounters } from '../rpc/gen/manager.js';
import type { ManagerClient } from '../rpc/manager-service.js';
import { errorDetails, unary } from '../rpc/unary-call.js';
import type { ConnectionCounters } from './connection-counters.js';

const log = createLogger('agent/counters');
export const REPORT_INTERVAL_MS = 10_000;

/** The counters as the manager's message (pure). */
export function countersMessage(counters: ConnectionCounters): AgentCounters {
  return {
    ports: [...counters.snapshot()].map(([appPort, c]) => ({
      appPort,
      passedThrough: c.passedThrough,
      intercepted: c.intercepted,
      dialFailures: c.dialFailures,
      direct: c.direct,
    })),
    probes: [...counters.probeSnapshot()].map(([probe, c]) => ({
      probe,
      performed: c.performed,
      failed: c.failed,
    })),
    reportedUnixMs: 0,
  };
}

/** Reports on a timer until the returned function is called. */
export function startCounterReports(
  session: { client: ManagerClient; sessionId: string },
  counters: ConnectionCounters,
  intervalMs = REPORT_INTERVAL_MS,
): () => void {
  let lastSession = '';
  let lastSent = '';
  let busy = false;
  const timer = setInterval(() => {
    const sessionId = session.sessionId;
    if (!sessionId || busy) return;
    const message = countersMessage(counters);
    const key = JSON.stringify(message);
    if (sessionId === lastSession && key === lastSent) return;
    busy = true;
    unary(
      (md, o, cb) =>
        session.client.reportAgentCounters(
          { session: { sessionId, remainIntervalMs: 0 }, counters: message },
          md,
          o,
          cb,
        ),
      5_000,
    )
      .then(
        () => {
          lastSession = sessionId;
          lastSent = key;
        },
        (e) => log.debug('reporting the counters failed', { reason: errorDetails(e) }),
      )
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
