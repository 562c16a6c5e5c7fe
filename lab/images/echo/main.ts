// lab/echo: an HTTP server on $PORT (default 8080) answering $TEXT (default the pod's name, which
// is the container's hostname) to every request, and logging each request to stdout.
import * as http from 'node:http';
import * as os from 'node:os';
import { parsePort } from '../../../netaddr/parse.js';

function main(): void {
  let port: number;
  try {
    port = parsePort(process.env.PORT ?? '8080', 'PORT');
  } catch (err) {
    process.stderr.write(`lab/echo: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const text = process.env.TEXT ?? process.env.HOSTNAME ?? os.hostname();
  const server = http.createServer((req, res) => {
    process.stdout.write(`${req.method} ${req.url} from ${req.socket.remoteAddress}\n`);
    req.resume();
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(`${text}\n`);
  });
  server.on('error', (err) => {
    process.stderr.write(`lab/echo: cannot listen on port ${port}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(port, () =>
    process.stdout.write(`lab/echo listening on :${port}, answering ${JSON.stringify(text)}\n`),
  );
  const stop = (signal: string) => {
    process.stdout.write(`lab/echo: ${signal}, shutting down\n`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main();
