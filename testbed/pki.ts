// Certificates for tests that play or meet an HTTPS server (the API server, the webhook, the session API):
// CAs and the certificates they sign, made with openssl in a scratch directory of their own.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface TestPki {
  dir: string;
  /** DIR/NAME. */
  file(name: string): string;
  /** The contents of DIR/NAME. */
  read(name: string): Buffer;
  /** NAME.crt and NAME.key: a self-signed CA, CN=NAME, valid for a day. */
  ca(name: string): void;
  /**
   * NAME.crt and NAME.key, CN=cn, signed by ISSUER's CA for a day, with an openssl extension line
   * ("subjectAltName=IP:127.0.0.1", "extendedKeyUsage=clientAuth"; empty: none).
   */
  cert(name: string, issuer: string, cn: string, ext?: string): void;
  /** Removes the directory. */
  remove(): void;
}

export function testPki(prefix: string): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  const file = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const key = (name: string) => ['-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`];
  return {
    dir,
    file,
    read: (name) => fs.readFileSync(file(name)),
    ca: (name) =>
      openssl('req', '-x509', ...key(name), '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${name}`),
    cert: (name, issuer, cn, ext = '') => {
      openssl('req', ...key(name), '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
      fs.writeFileSync(file(`${name}.ext`), `${ext}\n`);
      openssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        `${issuer}.crt`,
        '-CAkey',
        `${issuer}.key`,
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
      );
    },
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
