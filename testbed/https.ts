// One HTTPS request and its whole answer, for tests that play the API server against tp's HTTPS servers
// (the webhook, the session API).
import * as https from 'node:https';

export function httpsRequest(
  options: https.RequestOptions,
  body = '',
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(options, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
