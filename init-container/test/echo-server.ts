// The app in the capture tests' pod: an HTTP server on each port given, answering with the peer it sees.
// The peer tells the paths apart: through the agent it is loopback (the agent dials 127.0.0.1 / ::1),
// directly it is the client's address. Usage: node echo-server.js PORT...
import * as http from 'node:http';

function plain(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '');
}

for (const port of process.argv.slice(2).map(Number)) {
  http
    .createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ peer: plain(req.socket.remoteAddress), port }));
    })
    // '::' accepts IPv4 too (as ::ffff:a.b.c.d).
    .listen({ port, host: '::' }, () => process.stdout.write(`listening on ${port}\n`));
}
