// What the agent did with the connections it accepted, per app port, and with the kubelet probes it
// performed, per container and kind: the numbers an admin reads to see whether traffic reaches the agent
// at all, where it went, and whether the app's health checks pass (`kill -USR2` on the agent logs them; the
// manager gets them every 10 s: agent/counter-report.ts).
// Plain integers bumped on the accept path: counting costs nothing next to the connection itself.

export interface PortCounts {
  /** Piped to the app on loopback. */
  passedThrough: number;
  /** Forwarded through the manager to an intercepting workstation (or meant to be: see fellBack). */
  intercepted: number;
  /** Of the intercepted ones, those the workstation could not take, given to the app instead. */
  fellBack: number;
  /** Of the intercepted ones, those that went straight to the workstation (agent/direct.ts). */
  direct: number;
  /** The dial failed: the app refused a passthrough, or the workstation could not dial an intercepted one. */
  dialFailures: number;
}

export type CountKind = keyof PortCounts;

export interface ProbeCounts {
  /** Original probes the agent performed against the app for the kubelet. */
  performed: number;
  /** Of those, the ones that failed (answered 503). */
  failed: number;
}

/** Counts kept elsewhere (the passthrough thread's shared memory), added to a port's in every snapshot. */
export type CountSource = () => Partial<PortCounts>;

export class ConnectionCounters {
  private readonly ports = new Map<number, PortCounts>();
  private readonly sources = new Map<number, CountSource[]>();
  private readonly probes = new Map<string, ProbeCounts>();

  /** `probes`: `container/kind` of each rewritten probe, in the order the status line lists them. */
  constructor(appPorts: readonly number[], probes: readonly string[] = []) {
    for (const port of [...appPorts].sort((a, b) => a - b))
      this.ports.set(port, { passedThrough: 0, intercepted: 0, fellBack: 0, direct: 0, dialFailures: 0 });
    for (const probe of probes) this.probes.set(probe, { performed: 0, failed: 0 });
  }

  /** The counts of one app port, live (the accept path bumps them in place). */
  of(appPort: number): PortCounts {
    const counts = this.ports.get(appPort);
    if (!counts) throw new Error(`app port ${appPort} is not one the agent serves`);
    return counts;
  }

  /** Adds what `source` counts to the port's counts in every snapshot and status line. */
  addSource(appPort: number, source: CountSource): void {
    this.of(appPort);
    const list = this.sources.get(appPort) ?? [];
    list.push(source);
    this.sources.set(appPort, list);
  }

  /** The counts of one probe (`container/kind`), live. */
  probe(id: string): ProbeCounts {
    const counts = this.probes.get(id);
    if (!counts) throw new Error(`probe ${id} is not one the agent performs`);
    return counts;
  }

  /** A copy of every port's counts, in port order. */
  snapshot(): Map<number, PortCounts> {
    return new Map([...this.ports].map(([port, c]) => [port, this.total(port, c)]));
  }

  private total(port: number, live: PortCounts): PortCounts {
    const sum = { ...live };
    for (const source of this.sources.get(port) ?? [])
      for (const [kind, n] of Object.entries(source()) as [CountKind, number][]) sum[kind] += n;
    return sum;
  }

  /** A copy of every probe's counts, in the order the status line lists them. */
  probeSnapshot(): Map<string, ProbeCounts> {
    return new Map([...this.probes].map(([id, c]) => [id, { ...c }]));
  }

  /**
   * One line, e.g. "app port 8080: 12 passed through, 3 intercepted, 0 dial failures; app port 9090: …;
   * ("3 intercepted (2 straight to the workstation, 1 given to the app: the workstation was unavailable)"
   * when some went so)
   * probes: echo/readiness 40 (2 failed), echo/liveness 20 (0 failed)" (no probes part without probes).
   */
  format(): string {
    const parts = [...this.snapshot()].map(
      ([port, c]) =>
        `app port ${port}: ${c.passedThrough} passed through, ${c.intercepted} intercepted` +
        interceptedDetail(c) +
        `, ${c.dialFailures} dial failures`,
    );
    if (this.probes.size > 0)
      parts.push(
        `probes: ${[...this.probes].map(([id, c]) => `${id} ${c.performed} (${c.failed} failed)`).join(', ')}`,
      );
    return parts.join('; ');
  }
}

/** " (2 straight to the workstation, 1 given to the app: …)", or "" when all went through the manager. */
function interceptedDetail(c: PortCounts): string {
  const parts = [
    c.direct > 0 ? `${c.direct} straight to the workstation` : '',
    c.fellBack > 0 ? `${c.fellBack} given to the app: the workstation was unavailable` : '',
  ].filter(Boolean);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}
