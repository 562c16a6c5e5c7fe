// The app of the capture bench: a small HTTP response on every port given, in the pod namespace.
// Usage: node capture-app.js PORT...
import * as http from 'node:http';

const body = 'ok\n';
for (const port of process.argv.slice(2).map(Number)) {
  http
    .createServer((_req, res) => {
      res.setHeader('content-length', body.length);
      res.end(body);
    })
    .listen({ port, host: '::' }, () => process.stdout.write(`listening on ${port}\n`));
}
