// What the agent does with a snapshot of its workload's intercepts, as a pure function: which reviews to
// send (ACTIVE for a port it captures, AGENT_ERROR for one it does not) and which app ports to forward:
// whole (a global intercept) or request by request (personal intercepts, each with its HTTP filter).
// Ingests are reviewed the same way (ACTIVE when their container is clear) but never take traffic.
import { isPersonal } from '../http-filter/filter.js';
import { InterceptDisposition as D, type HttpFilter, type InterceptInfo } from '../rpc/gen/manager.js';
import { type AppContainer, chooseContainer } from './containers.js';

export interface ReviewToSend {
  interceptId: string;
  disposition: D.ACTIVE | D.AGENT_ERROR;
  message: string;
  /** ACTIVE: the container whose environment goes with the review. */
  container: string;
}

export interface InterceptPlan {
  reviews: ReviewToSend[];
  /** app port -> intercept id: new connections to these ports go to the intercepting client. */
  routes: Map<number, string>;
  /** app port -> its personal intercepts: the requests each filter matches go to its client. */
  personal: Map<number, PersonalRoute[]>;
  /**
   * The routed intercepts (either kind) by id, with what their client shows to receive their connections
   * straight from this agent (agent/direct.ts); none for an intercept without a direct token.
   */
  direct: Map<string, DirectIntercept>;
}

/** An accepted intercept, as its client's direct watch must prove it (agent/direct.ts). */
export interface DirectIntercept {
  /** InterceptInfo.direct_token. */
  token: string;
  clientSessionId: string;
  /** Where the client dials each connection (the intercept's local target). */
  targetHost: string;
  targetPort: number;
}

export interface PersonalRoute {
  interceptId: string;
  filter: HttpFilter;
}

/**
 * @param sent the reviews this agent already sent in this session (intercept id -> disposition), so a
 *   snapshot that does not show them yet does not trigger them again; plan() prunes vanished intercepts.
 */
export function plan(
  intercepts: InterceptInfo[],
  podName: string,
  capturedAppPorts: number[],
  sent: Map<string, D>,
  containers: AppContainer[],
): InterceptPlan {
  const reviews: ReviewToSend[] = [];
  const routes = new Map<number, string>();
  const personal = new Map<number, PersonalRoute[]>();
  const present = new Set<string>();
  for (const i of intercepts) {
    present.add(i.id);
    const ingest = i.spec?.ingest ?? false;
    const port = i.spec?.remotePort ?? 0;
    const captured = ingest || capturedAppPorts.includes(port);
    const choice = captured ? chooseContainer(i.spec, containers) : undefined;
    const container = choice && 'container' in choice ? choice.container.name : '';
    const want = container ? D.ACTIVE : D.AGENT_ERROR;
    const mine = i.pods.find((p) => p.podName === podName)?.disposition;
    if (mine !== want && sent.get(i.id) !== want) {
      reviews.push({
        interceptId: i.id,
        disposition: want,
        message: !captured
          ? `this agent does not capture port ${port}: it captures ${capturedAppPorts.join(', ')}`
          : choice && 'error' in choice
            ? choice.error
            : '',
        container,
      });
      sent.set(i.id, want);
    }
    if (ingest || !container) continue;
    const filter = i.spec?.httpFilter;
    if (isPersonal(filter))
      personal.set(port, [...(personal.get(port) ?? []), { interceptId: i.id, filter }]);
    else if (!routes.has(port)) routes.set(port, i.id);
  }
  // The manager never lets a global intercept share a port with personal ones; should a snapshot show
  // both, the global one takes the port whole, as before personal intercepts existed.
  for (const port of routes.keys()) personal.delete(port);
  for (const id of [...sent.keys()]) if (!present.has(id)) sent.delete(id);
  const routed = new Set([
    ...routes.values(),
    ...[...personal.values()].flatMap((rs) => rs.map((r) => r.interceptId)),
  ]);
  const direct = new Map<string, DirectIntercept>();
  for (const i of intercepts)
    if (routed.has(i.id) && i.directToken && i.spec)
      direct.set(i.id, {
        token: i.directToken,
        clientSessionId: i.clientSessionId,
        targetHost: i.spec.targetHost,
        targetPort: i.spec.targetPort,
      });
  return { reviews, routes, personal, direct };
}
