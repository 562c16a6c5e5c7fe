// The agent's configuration is agentconfig/'s decode() of the environment the injector wrote; this is what
// the agent derives from it.
import type { PortMapping } from '../netaddr/parse.js';

/** The agent ports and the app ports each one serves (several app ports may share one agent port). */
export function listenersOf(ports: PortMapping[]): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const p of ports) out.set(p.agentPort, [...(out.get(p.agentPort) ?? []), p.appPort]);
  return out;
}
