// The workloads of the e2e scenarios, as objects (rendered to YAML for kubectl apply).
import { createHash } from 'node:crypto';
import type { Cluster } from './cluster.js';

const PATTERN_BYTES = 65536;

/**
 * Source (CommonJS, for the scenario apps run with `node -e`) of `sendPattern(res, n)`: answers an HTTP
 * request with n bytes of a fixed pattern, respecting backpressure. patternHash(n) is their sha256.
 */
export const sendPatternSource = `
const pattern = Buffer.alloc(${PATTERN_BYTES}, 0).map((_, i) => i % 251);
function sendPattern(res, n) {
  let left = n;
  res.writeHead(200, { 'content-length': left });
  const more = () => {
    while (left > 0) {
      const chunk = pattern.subarray(0, Math.min(left, pattern.length));
      left -= chunk.length;
      if (!res.write(chunk)) return res.once('drain', more);
    }
    res.end();
  };
  more();
}
`;

/** The sha256 (hex) of the n bytes sendPattern sends. */
export function patternHash(n: number): string {
  const pattern = Buffer.alloc(PATTERN_BYTES, 0).map((_, i) => i % 251);
  const h = createHash('sha256');
  for (let left = n; left > 0; left -= pattern.length)
    h.update(pattern.subarray(0, Math.min(left, pattern.length)));
  return h.digest('hex');
}

export const ECHO_PORT = 8080;

/** A Deployment of `replicas` echo servers; each answers its pod name on $PORT. */
/** A Deployment of `replicas` pods running `podSpec`, selected by `labels`. */
export function deployment(
  name: string,
  labels: Record<string, string>,
  podSpec: object,
  replicas = 1,
): object {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels },
    spec: { replicas, selector: { matchLabels: labels }, template: { metadata: { labels }, spec: podSpec } },
  };
}

export function echoDeployment(c: Cluster, name = 'echo', replicas = 2): object {
  const labels = { app: name };
  return deployment(
    name,
    labels,
    {
      terminationGracePeriodSeconds: 5,
      containers: [
        {
          name: 'echo',
          image: c.images.echo,
          env: [{ name: 'PORT', value: String(ECHO_PORT) }],
          ports: [{ name: 'http', containerPort: ECHO_PORT }],
          readinessProbe: { httpGet: { path: '/', port: ECHO_PORT }, periodSeconds: 2 },
        },
      ],
    },
    replicas,
  );
}

/** A ClusterIP Service on port 80 with a numeric targetPort. */
export function echoService(name = 'echo'): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: { selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort: ECHO_PORT }] },
  };
}

/**
 * Source (CommonJS, for `node -e`) of a client that sends `n` GET requests to `url` one after another on one
 * keep-alive connection and prints {"bodies": [...], "sockets": <connections used>, "ms": <total>}.
 */
export function sequentialClientSource(url: string, n: number): string {
  return `
const http = require('node:http');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const sockets = new Set();
const bodies = [];
const get = () => new Promise((resolve, reject) => {
  const req = http.get(${JSON.stringify(url)}, { agent, timeout: 10000 }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { body += d; });
    res.on('end', () => resolve(body));
  });
  req.on('socket', (s) => sockets.add(s));
  req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
  req.on('error', reject);
});
(async () => {
  const started = Date.now();
  for (let i = 0; i < ${n}; i++) bodies.push(await get());
  console.log(JSON.stringify({ bodies, sockets: sockets.size, ms: Date.now() - started }));
  agent.destroy();
})().catch((e) => { console.log(JSON.stringify({ error: e.message, bodies, sockets: sockets.size })); process.exit(1); });
`;
}

/**
 * Checks what sequentialClientSource printed: no error, `n` bodies each accepted by `body`, all on one
 * connection; prints the time it took (for the record: bench/round-trip guards the speed).
 */
export function checkSequential(
  r: { stdout: string; stderr: string },
  n: number,
  body: (b: string) => boolean,
  path: string,
): void {
  const out = JSON.parse(r.stdout.trim() || '{}') as {
    bodies?: string[];
    sockets?: number;
    ms?: number;
    error?: string;
  };
  if (out.error !== undefined) throw new Error(`the client failed: ${out.error} (${r.stderr.trim()})`);
  const bodies = out.bodies ?? [];
  if (bodies.length !== n) throw new Error(`${bodies.length} of ${n} requests answered`);
  if (!bodies.every(body)) throw new Error(`unexpected bodies: ${[...new Set(bodies)].join(', ')}`);
  if (out.sockets !== 1) throw new Error(`${out.sockets} connections, not one`);
  process.stdout.write(`# ${n} sequential requests on one connection through ${path}: ${out.ms} ms\n`);
}
