// What the agent did with the connections it accepted, per app port: the numbers an admin reads to see
// whether traffic reaches the agent at all and where it went (`kill -USR2` on the agent logs them).
// Plain integers bumped on the accept path: counting costs nothing next to the connection itself.

export interface PortCounts {
  /** Piped to the app on loopback. */
  passedThrough: number;
  /** Forwarded through the manager to an intercepting workstation. */
  intercepted: number;
  /** From the node (TP_HOST_IP: kubelet probes), always passed through, never intercepted. */
  probes: number;
  /** The dial failed: the app refused a passthrough, or the workstation could not dial an intercepted one. */
  dialFailures: number;
}

export type CountKind = keyof PortCounts;

export class ConnectionCounters {
  private readonly ports = new Map<number, PortCounts>();

  constructor(appPorts: readonly number[]) {
    for (const port of [...appPorts].sort((a, b) => a - b))
      this.ports.set(port, { passedThrough: 0, intercepted: 0, probes: 0, dialFailures: 0 });
  }

  /** The counts of one app port, live (the accept path bumps them in place). */
  of(appPort: number): PortCounts {
    const counts = this.ports.get(appPort);
    if (!counts) throw new Error(`app port ${appPort} is not one the agent serves`);
    return counts;
  }

  /** A copy of every port's counts, in port order. */
  snapshot(): Map<number, PortCounts> {
    return new Map([...this.ports].map(([port, c]) => [port, { ...c }]));
  }

  /** One line, e.g. "app port 8080: 12 passed through, 3 intercepted, 2 probes, 0 dial failures; app port 9090: …". */
  format(): string {
    return [...this.ports]
      .map(
        ([port, c]) =>
          `app port ${port}: ${c.passedThrough} passed through, ${c.intercepted} intercepted, ${c.probes} probes, ${c.dialFailures} dial failures`,
      )
      .join('; ');
  }
}
