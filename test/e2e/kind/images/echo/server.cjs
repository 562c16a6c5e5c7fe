// lab/echo for real clusters: an HTTP server on $PORT (default 8080) answering $TEXT (default the
// pod's name, which is the container's hostname), one log line per request, like the lab's echo.
const http = require('node:http');
const os = require('node:os');

const port = Number(process.env.PORT || 8080);
const text = process.env.TEXT || os.hostname();
const server = http.createServer((req, res) => {
  console.log(`${req.method} ${req.url} from ${req.socket.remoteAddress}`);
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`${text}\n`);
});
server.listen(port, () => console.log(`echo: listening on :${port}, answering ${JSON.stringify(text)}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
