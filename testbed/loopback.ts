// Ports on 127.0.0.1 for the processes a test or bench starts on loopback.
import * as net from 'node:net';

/**
 * A port nothing listens on right now (the kernel's pick; free until someone else takes it), on 127.0.0.1
 * or `host`.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** N numbers, as a tuple type, so destructuring `const [a, b] = await freePorts(2)` gives numbers. */
type Ports<N extends number, T extends number[] = []> = T['length'] extends N ? T : Ports<N, [...T, number]>;

/**
 * `count` different ports nothing listens on right now: each is held until all are chosen, so two calls
 * to bind(0) cannot hand out the same port twice (a bench whose agent port equals its manager port sees
 * "the agent listens" and never sees the agent).
 */
export async function freePorts<N extends 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8>(count: N): Promise<Ports<N>> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port) as Ports<N>;
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}
