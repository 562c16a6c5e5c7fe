// Client and agent sessions: arrival, heartbeats (Remain) and expiry after a TTL of silence.
// Pure apart from the clock, which tests replace.
import * as crypto from 'node:crypto';
import type { AgentInfo, ClientInfo } from '../rpc/gen/manager.js';
import type { AgentIdentity } from './access-control.js';
import type { Identity } from './credentials.js';

export interface ClientSession {
  kind: 'client';
  id: string;
  info: ClientInfo;
  /** The Kubernetes user that arrived (undefined: standalone, or let in by permissive mode). */
  identity?: Identity;
  arrivedAt: number;
  lastSeen: number;
}

export interface AgentSession {
  kind: 'agent';
  id: string;
  info: AgentInfo;
  /** The pod the cluster vouched for (undefined: standalone, or let in by permissive mode). */
  identity?: AgentIdentity;
  arrivedAt: number;
  lastSeen: number;
}

export type Session = ClientSession | AgentSession;

export interface SessionTtls {
  clientTtlMs: number;
  agentTtlMs: number;
  /**
   * How long the intercepts of a lost client session (its stream closed, keepalives unanswered, expiry)
   * are held for the same user and workstation to take back (default DEFAULT_INTERCEPT_GRACE_MS).
   */
  interceptGraceMs?: number;
  /** How long a lost client session still takes its workstation's flows (default LOST_SESSION_LINGER_MS). */
  lostSessionLingerMs?: number;
}

export const DEFAULT_INTERCEPT_GRACE_MS = 120_000;

/**
 * How long a lost client session (its dial stream closed: the user daemon died, its port-forward broke)
 * still takes the workstation's own flows and DNS lookups: the root daemon keeps the VIF for a new user
 * daemon (daemons/root/service.ts OWNER_GRACE_MS, checked every 2 s) and carries on under the new session
 * it brings; meanwhile its connections to the cluster neither fail nor wait. Nothing else of the session
 * lingers: its intercepts are held, its watches end, no call but those finds it.
 */
export const LOST_SESSION_LINGER_MS = 15_000;

/** Heartbeats come every 5 s, or faster when a short TTL needs it (three chances before expiry). */
export function remainIntervalMs(ttlMs: number): number {
  return Math.max(100, Math.min(5_000, Math.floor(ttlMs / 3)));
}

export class SessionRegistry {
  private readonly sessions = new Map<string, Session>();
  /** Client sessions lost within LOST_SESSION_LINGER_MS, and when each stops lingering. */
  private readonly lingering = new Map<string, { session: ClientSession; until: number }>();

  constructor(
    readonly ttls: SessionTtls,
    private readonly now: () => number = Date.now,
  ) {}

  arriveClient(info: ClientInfo, identity?: Identity): ClientSession {
    const t = this.now();
    const s: ClientSession = {
      kind: 'client',
      id: `c-${crypto.randomUUID()}`,
      info,
      identity,
      arrivedAt: t,
      lastSeen: t,
    };
    this.sessions.set(s.id, s);
    return s;
  }

  arriveAgent(info: AgentInfo, identity?: AgentIdentity): AgentSession {
    const t = this.now();
    const s: AgentSession = {
      kind: 'agent',
      id: `a-${crypto.randomUUID()}`,
      info,
      identity,
      arrivedAt: t,
      lastSeen: t,
    };
    this.sessions.set(s.id, s);
    return s;
  }

  /** A heartbeat; false when the session is unknown (expired, departed, or the manager restarted). */
  remain(id: string): boolean {
    const s = this.sessions.get(id);
    if (!s) return false;
    s.lastSeen = this.now();
    return true;
  }

  depart(id: string): Session | undefined {
    const s = this.sessions.get(id);
    this.sessions.delete(id);
    this.lingering.delete(id);
    return s;
  }

  /** A client session lost, not departed: gone, but its workstation's flows are taken a while longer. */
  lose(id: string): Session | undefined {
    const s = this.depart(id);
    const linger = this.ttls.lostSessionLingerMs ?? LOST_SESSION_LINGER_MS;
    if (s?.kind === 'client') this.lingering.set(id, { session: s, until: this.now() + linger });
    return s;
  }

  /** The session a workstation's own flow or DNS lookup names: a live one, or a client session lost lately. */
  forWorkstation(id: string): Session | undefined {
    const live = this.sessions.get(id);
    if (live) return live;
    const lost = this.lingering.get(id);
    if (lost && this.now() < lost.until) return lost.session;
    return undefined;
  }

  /** Removes and returns the sessions silent for longer than their TTL. */
  expire(): Session[] {
    const t = this.now();
    for (const [id, lost] of this.lingering) if (t >= lost.until) this.lingering.delete(id);
    const gone: Session[] = [];
    for (const s of this.sessions.values()) {
      const ttl = s.kind === 'client' ? this.ttls.clientTtlMs : this.ttls.agentTtlMs;
      if (t - s.lastSeen > ttl) gone.push(s);
    }
    for (const s of gone) this.sessions.delete(s.id);
    return gone;
  }

  get(id: string): Session | undefined {
    return this.sessions.get(id);
  }

  client(id: string): ClientSession | undefined {
    const s = this.sessions.get(id);
    return s?.kind === 'client' ? s : undefined;
  }

  agent(id: string): AgentSession | undefined {
    const s = this.sessions.get(id);
    return s?.kind === 'agent' ? s : undefined;
  }

  agents(): AgentSession[] {
    return [...this.sessions.values()].filter((s): s is AgentSession => s.kind === 'agent');
  }

  clients(): ClientSession[] {
    return [...this.sessions.values()].filter((s): s is ClientSession => s.kind === 'client');
  }

  remainIntervalFor(kind: Session['kind']): number {
    return remainIntervalMs(kind === 'client' ? this.ttls.clientTtlMs : this.ttls.agentTtlMs);
  }
}
