// Which app port an intercept means, pure. Users name the port as Telepresence users do: `--port
// LOCAL:REMOTE` where REMOTE is a container port (number or name) or a port of a Service that selects the
// workload (number or name), and `--service` picks among several Services. Every name resolves to the app
// port the agent captures; an ambiguous or unknown one is refused with the candidates listed.
import type { AgentPort, InterceptSpec, ServicePort } from '../rpc/gen/manager.js';

/** One way to name an app port, for the candidate lists in refusals. */
interface Candidate {
  appPort: number;
  label: string;
}

function candidates(ports: AgentPort[], service: string): Candidate[] {
  const out: Candidate[] = [];
  for (const p of ports) {
    if (!service) out.push({ appPort: p.appPort, label: containerLabel(p) });
    for (const sp of p.servicePorts) {
      if (service && sp.service !== service) continue;
      out.push({ appPort: p.appPort, label: serviceLabel(sp, p.appPort) });
    }
  }
  return out;
}

function serviceLabel(sp: ServicePort, appPort: number): string {
  return `Service ${sp.service} port ${sp.port}${sp.name ? ` "${sp.name}"` : ''} -> ${appPort}`;
}

function containerLabel(p: AgentPort): string {
  return `container port ${p.appPort}${p.name ? ` "${p.name}"` : ''}`;
}

function list(cs: Candidate[]): string {
  return cs.map((c) => c.label).join(', ') || 'none';
}

export type PortResolution = { appPort: number } | { error: string };

/**
 * The app port of `spec.remotePort` (a number) or `spec.portName` (a name), through the container ports
 * and the Service ports of `ports` (only `spec.serviceName`'s with one); neither: the only port there is.
 */
export function resolveInterceptPort(
  spec: Pick<InterceptSpec, 'remotePort' | 'portName' | 'serviceName'>,
  ports: AgentPort[],
  where: string,
): PortResolution {
  const service = spec.serviceName;
  if (service && !ports.some((p) => p.servicePorts.some((sp) => sp.service === service))) {
    const selecting = [...new Set(ports.flatMap((p) => p.servicePorts.map((sp) => sp.service)))].sort();
    return {
      error: `Service "${service}" does not select ${where}: ${
        selecting.length ? `the Services that do are ${selecting.join(', ')}` : 'no Service selects it'
      }`,
    };
  }
  const all = candidates(ports, service);
  const wanted = spec.remotePort ? String(spec.remotePort) : spec.portName;
  let matches: Candidate[];
  if (!wanted) matches = all;
  else {
    const byNumber = spec.remotePort !== 0;
    matches = [];
    for (const p of ports) {
      if (!service && (byNumber ? p.appPort === spec.remotePort : p.name === wanted))
        matches.push({ appPort: p.appPort, label: containerLabel(p) });
      for (const sp of p.servicePorts) {
        if (service && sp.service !== service) continue;
        if (byNumber ? sp.port === spec.remotePort : sp.name === wanted)
          matches.push({ appPort: p.appPort, label: serviceLabel(sp, p.appPort) });
      }
      // --service with a container port of that Service's target: allowed, the port is the same.
      if (
        service &&
        byNumber &&
        p.appPort === spec.remotePort &&
        p.servicePorts.some((sp) => sp.service === service)
      )
        matches.push({ appPort: p.appPort, label: containerLabel(p) });
    }
  }
  const distinct = [...new Set(matches.map((m) => m.appPort))];
  if (distinct.length === 1) return { appPort: distinct[0]! };
  const scope = service ? `${where} through Service ${service}` : where;
  if (all.length === 0) return { error: `${scope} captures no port` };
  if (distinct.length === 0) return { error: `${scope} has no port ${wanted}: use one of ${list(all)}` };
  if (!wanted)
    return {
      error: `${scope} has several ports: say which with --port LOCAL:REMOTE, one of ${list(all)}`,
    };
  return {
    error: `port ${wanted} of ${scope} is ambiguous: ${list(matches)}; choose with --service SERVICE or a container port number`,
  };
}
