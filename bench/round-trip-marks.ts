// The marks of bench/round-trip (issue 11), as a pure function of the figures it measured: each path
// through tp (the intercept, the VIF) against `kubectl port-forward` alone to the same pod, in the same run.

/** A wrk run (one connection: -c1): requests per second and latency percentiles in milliseconds. */
export interface Sequential {
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

/** What was measured on one path: through tp, or through the port-forward alone. */
export interface PathFigures {
  /** One connection, sequential requests on it. */
  keepAlive: Sequential;
  /** A new connection per request. */
  newConnection: Sequential;
  /** PARALLEL_CONNECTIONS connections at once, sequential requests on each (no mark: the table). */
  parallel: Sequential;
  /** Bulk transfer rates in MiB/s, by the direction the bytes cross the port-forward. */
  toWorkstationMiBs: number;
  toClusterMiBs: number;
}

export interface RoundTripFigures {
  intercept: PathFigures;
  interceptAnchor: PathFigures;
  vif: PathFigures;
  vifAnchor: PathFigures;
  /** Sequential requests through the VIF while a large download runs on another connection. */
  headOfLine: { idleP99Ms: number; loadedP99Ms: number; downloadMiBs: number };
}

export interface Mark {
  what: string;
  figure: string;
  mark: string;
  met: boolean;
}

/** The connections of the parallel row (wrk -t2 -c50). */
export const PARALLEL_CONNECTIONS = 50;
export const KEEP_ALIVE_FIRST_MARK = 0.5;
export const KEEP_ALIVE_GOAL = 0.8;
export const NEW_CONNECTION_SLACK_MS = 2;
export const BULK_MARK = 0.9;
export const HEAD_OF_LINE_FACTOR = 5;

/** Every mark of the issue, met or not, in the order the bench prints them. */
export function roundTripMarks(f: RoundTripFigures): Mark[] {
  const marks: Mark[] = [];
  const paths = [
    ['intercept', f.intercept, f.interceptAnchor],
    ['VIF', f.vif, f.vifAnchor],
  ] as const;
  for (const [name, tp, anchor] of paths) {
    const ratio = tp.keepAlive.rps / anchor.keepAlive.rps;
    marks.push({
      what: `${name}: one connection, sequential requests (req/s vs port-forward)`,
      figure: ratio.toFixed(2),
      mark: `first mark >= ${KEEP_ALIVE_FIRST_MARK}`,
      met: ratio >= KEEP_ALIVE_FIRST_MARK,
    });
    marks.push({
      what: `${name}: one connection, sequential requests (req/s vs port-forward)`,
      figure: ratio.toFixed(2),
      mark: `goal >= ${KEEP_ALIVE_GOAL}`,
      met: ratio >= KEEP_ALIVE_GOAL,
    });
    const extra = tp.newConnection.p50Ms - anchor.newConnection.p50Ms;
    marks.push({
      what: `${name}: new connection per request (p50 minus port-forward's)`,
      figure: `${extra >= 0 ? '+' : ''}${extra.toFixed(2)} ms`,
      mark: `<= ${NEW_CONNECTION_SLACK_MS} ms`,
      met: extra <= NEW_CONNECTION_SLACK_MS,
    });
    for (const [dir, key] of [
      ['cluster -> workstation', 'toWorkstationMiBs'],
      ['workstation -> cluster', 'toClusterMiBs'],
    ] as const) {
      const bulk = tp[key] / anchor[key];
      marks.push({
        what: `${name}: bulk ${dir} (vs port-forward)`,
        figure: bulk.toFixed(2),
        mark: `>= ${BULK_MARK}`,
        met: bulk >= BULK_MARK,
      });
    }
  }
  const hol = f.headOfLine.loadedP99Ms / f.headOfLine.idleP99Ms;
  marks.push({
    what: 'VIF: p99 of sequential requests during a download (vs idle)',
    figure: `${hol.toFixed(1)}x`,
    mark: `<= ${HEAD_OF_LINE_FACTOR}x`,
    met: hol <= HEAD_OF_LINE_FACTOR,
  });
  return marks;
}

/** The figures as a table: each path beside its port-forward anchor. */
export function renderFigures(f: RoundTripFigures): string[] {
  const seq = (s: Sequential) =>
    `${s.rps.toFixed(0).padStart(6)} req/s  p50 ${ms(s.p50Ms)}  p99 ${ms(s.p99Ms)}`;
  const lines: string[] = [];
  for (const [name, tp, anchor] of [
    ['intercept', f.intercept, f.interceptAnchor],
    ['VIF', f.vif, f.vifAnchor],
  ] as const) {
    lines.push(`  ${name}`);
    lines.push(`    one connection       tp ${seq(tp.keepAlive)}   port-forward ${seq(anchor.keepAlive)}`);
    lines.push(
      `    connection/request   tp ${seq(tp.newConnection)}   port-forward ${seq(anchor.newConnection)}`,
    );
    lines.push(
      `    ${PARALLEL_CONNECTIONS} connections       tp ${seq(tp.parallel)}   port-forward ${seq(anchor.parallel)}`,
    );
    lines.push(
      `    bulk to workstation  tp ${mibs(tp.toWorkstationMiBs)}                         port-forward ${mibs(anchor.toWorkstationMiBs)}`,
    );
    lines.push(
      `    bulk to cluster      tp ${mibs(tp.toClusterMiBs)}                         port-forward ${mibs(anchor.toClusterMiBs)}`,
    );
  }
  const h = f.headOfLine;
  lines.push(
    `  VIF during a download (${h.downloadMiBs.toFixed(0)} MiB/s): p99 ${ms(h.loadedP99Ms)} (idle ${ms(h.idleP99Ms).trim()})`,
  );
  return lines;
}

export function renderMarks(marks: Mark[]): string[] {
  const width = Math.max(...marks.map((m) => m.what.length));
  return marks.map(
    (m) => `  ${m.what.padEnd(width)}  ${m.figure.padStart(9)}  ${m.met ? 'MET  ' : 'BELOW'} (${m.mark})`,
  );
}

function ms(x: number): string {
  return `${x.toFixed(2).padStart(6)} ms`;
}

function mibs(x: number): string {
  return `${x.toFixed(0).padStart(6)} MiB/s`;
}
