// Probe rewriting as a pure function, part of agent injection (the Istio approach, written our own way).
//
// The kubelet's HTTP, TCP and gRPC probes go to a pod port. When that port is captured, the connection
// lands on the agent, which forwards it to a workstation while an intercept is active: the pod would go
// unready, or be restarted, whenever the developer's process is stopped. Telling probes apart by their
// source address does not work (it depends on the CNI, and NodePort traffic is SNATed to the node), so the
// webhook rewrites each such probe into an httpGet to the agent's probe port, which is never captured, and
// hands the original to the agent (TP_PROBES). The agent performs the original against the app on
// loopback, which is never captured either, and answers 200 or 503. Timings stay exactly as written.
//
// Which probes: those of the containers that run beside the app (spec.containers and sidecar init
// containers, restartPolicy Always) whose handler is httpGet, tcpSocket or grpc and whose port is one
// capture redirects. Left as written, and recorded with the reason: a probe whose `host` names another
// address (it never reaches the pod), a named port the container does not declare (the kubelet reports
// it as it would without tp), a port capture does not touch (it already reaches the app directly). Exec
// probes run inside the container and never touch the network capture: they are not looked at.
import type { V1Container, V1Pod, V1Probe } from '@kubernetes/client-node';
import { type AppProbe, type ProbeHandler, type ProbeKind, probePath } from '../../probes/spec.js';
import type { JsonPatchOperation } from './injection.js';

const PROBE_FIELDS: [ProbeKind, 'readinessProbe' | 'livenessProbe' | 'startupProbe'][] = [
  ['readiness', 'readinessProbe'],
  ['liveness', 'livenessProbe'],
  ['startup', 'startupProbe'],
];

export interface ProbeRewrite {
  /** Replaces each rewritten probe; to be applied before anything shifts the container lists. */
  patch: JsonPatchOperation[];
  /** The originals, for the agent (TP_PROBES). */
  probes: AppProbe[];
  /** `container/kind` of each rewritten probe. */
  rewritten: string[];
  /** `container/kind: why` of each network probe left as written. */
  notRewritten: string[];
}

/**
 * Rewrites the network probes that reach captured ports to `GET /tp-probe/<container>/<kind>` on the
 * agent's probe port.
 */
export function rewriteProbes(pod: V1Pod, captured: readonly number[], probePort: number): ProbeRewrite {
  const out: ProbeRewrite = { patch: [], probes: [], rewritten: [], notRewritten: [] };
  const capturedSet = new Set(captured);
  const visit = (container: V1Container, path: string) => {
    for (const [kind, field] of PROBE_FIELDS) {
      const probe = container[field];
      if (!probe) continue;
      const id = `${container.name}/${kind}`;
      const handler = originalHandler(probe, container);
      if (handler === undefined) continue; // exec, or no handler: nothing of the network
      if (typeof handler === 'string') {
        out.notRewritten.push(`${id}: ${handler}`);
        continue;
      }
      const port = handlerPort(handler);
      if (!capturedSet.has(port)) {
        out.notRewritten.push(`${id}: port ${port} is not captured, so the probe reaches the app directly`);
        continue;
      }
      out.probes.push({
        container: container.name,
        kind,
        timeoutSeconds: probe.timeoutSeconds ?? 1,
        ...handler,
      });
      out.rewritten.push(id);
      out.patch.push({ op: 'replace', path: `${path}/${field}`, value: agentProbe(probe, container, kind) });
    }
  };
  for (const [i, c] of (pod.spec?.containers ?? []).entries()) visit(c, `/spec/containers/${i}`);
  for (const [i, c] of (pod.spec?.initContainers ?? []).entries())
    if (c.restartPolicy === 'Always') visit(c, `/spec/initContainers/${i}`);
  return out;

  function agentProbe(original: V1Probe, container: V1Container, kind: ProbeKind): V1Probe {
    const { exec: _e, httpGet: _h, tcpSocket: _t, grpc: _g, ...timings } = original;
    return {
      httpGet: { path: probePath(container.name, kind), port: probePort, scheme: 'HTTP' },
      ...timings,
    };
  }
}

/**
 * The probe's handler with its port resolved, undefined for exec (or none), or why it stays as written.
 */
function originalHandler(probe: V1Probe, container: V1Container): ProbeHandler | string | undefined {
  if (probe.httpGet) {
    const h = probe.httpGet;
    if (h.host) return notThisPod(h.host);
    const port = resolvePort(h.port, container);
    if (typeof port === 'string') return port;
    const path = h.path ?? '';
    return {
      httpGet: {
        port,
        scheme: (h.scheme ?? '').toUpperCase() === 'HTTPS' ? 'HTTPS' : 'HTTP',
        path: path.startsWith('/') ? path : `/${path}`,
        httpHeaders: (h.httpHeaders ?? []).map((x) => ({ name: x.name, value: x.value })),
      },
    };
  }
  if (probe.tcpSocket) {
    if (probe.tcpSocket.host) return notThisPod(probe.tcpSocket.host);
    const port = resolvePort(probe.tcpSocket.port, container);
    return typeof port === 'string' ? port : { tcpSocket: { port } };
  }
  if (probe.grpc) return { grpc: { port: probe.grpc.port, service: probe.grpc.service ?? '' } };
  return undefined;
}

function notThisPod(host: string): string {
  return `host ${host} is not this pod, so the probe never reaches the capture`;
}

function handlerPort(h: ProbeHandler): number {
  if ('httpGet' in h) return h.httpGet.port;
  if ('tcpSocket' in h) return h.tcpSocket.port;
  return h.grpc.port;
}

/**
 * A probe's port as the kubelet resolves it: a number; a name of one of the container's own ports; a
 * number written as a string. A string otherwise: why it cannot be resolved.
 */
export function resolvePort(port: number | string, container: V1Container): number | string {
  let n: number;
  if (typeof port === 'number') n = port;
  else {
    const named = container.ports?.find((p) => p.name === port);
    if (named) n = named.containerPort;
    else if (/^\d+$/.test(port)) n = Number(port);
    else
      return `port "${port}" is not a port name of container ${container.name} (the kubelet reports that as it would without tp)`;
  }
  if (!Number.isInteger(n) || n < 1 || n > 65535) return `port ${port} is not a valid port number`;
  return n;
}
