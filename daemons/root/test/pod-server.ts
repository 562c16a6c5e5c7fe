// Test fixture: "a pod" in the cluster namespace. HTTP (GET /bytes?n=N streams N bytes of the
// deterministic payload, GET /zeros?n=N N zero bytes, GET / a short text; keep-alive) and a UDP echo.
//   node dist/daemons/root/test/pod-server.js [--http PORT] [--udp PORT]
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import { payloadChunks } from './payload.js';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};

const ZEROS = Buffer.alloc(1 << 20);

/** N zero bytes from one preallocated buffer: the bench's bulk, costing the server next to nothing. */
function sendZeros(res: http.ServerResponse, n: number): void {
  res.writeHead(200, { 'content-length': n, 'content-type': 'application/octet-stream' });
  let left = n;
  const pump = () => {
    while (left > 0) {
      const chunk = ZEROS.subarray(0, Math.min(left, ZEROS.length));
      left -= chunk.length;
      if (!res.write(chunk)) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

const server = http.createServer((req, res) => {
  const zeros = /^\/zeros\?n=(\d+)$/.exec(req.url ?? '');
  if (zeros) return sendZeros(res, Number(zeros[1]));
  const m = /^\/bytes\?n=(\d+)$/.exec(req.url ?? '');
  if (!m) {
    res.end('hello from the pod\n');
    return;
  }
  const n = Number(m[1]);
  res.writeHead(200, { 'content-length': n, 'content-type': 'application/octet-stream' });
  const chunks = payloadChunks(n);
  const pump = () => {
    for (;;) {
      const next = chunks.next();
      if (next.done) return void res.end();
      if (!res.write(next.value)) return void res.once('drain', pump);
    }
  };
  pump();
});
server.keepAliveTimeout = 60_000;
server.listen(arg('--http', 8080), '::'); // both families

const udp = dgram.createSocket('udp4');
udp.on('message', (msg, rinfo) =>
  udp.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address),
);
udp.bind(arg('--udp', 5353), '0.0.0.0', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
