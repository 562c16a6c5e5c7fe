// tp gather-logs, the workstation side: the archive's name, redaction, which daemon logs, and the archive
// written and read back (a real file in a temporary directory).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  archivePath,
  daemonLogFiles,
  parseDaemonChoice,
  readArchive,
  redactEnv,
  redactLog,
  writeArchive,
} from './gather-logs.js';

test('the archive is a .tar.gz; .zip is refused naming the reason and the fix', () => {
  assert.is(archivePath(undefined, new Date('2026-12-04T17:20:01.123Z')), 'tp-logs-20261204T172001Z.tar.gz');
  assert.is(archivePath('/tmp/x.tgz', new Date()), '/tmp/x.tgz');
  assert.throws(() => archivePath('logs.zip', new Date()), /no zip library\): use -o logs\.tar\.gz/);
  assert.throws(() => archivePath('logs.txt', new Date()), /name it FILE\.tar\.gz/);
  assert.throws(() => parseDaemonChoice('both'), /use all, user, root or none/);
});

test('secrets are redacted: secret-looking env names, bearer tokens and token=… in logs; references kept', () => {
  assert.is(
    redactEnv([
      ['TP_PORTS', '8080'],
      ['API_TOKEN', 'abc'],
      ['DB_PASSWORD', 'hunter2'],
      ['TLS_KEY', '<from secret tls/key>'],
      ['TP_MANAGER_TOKEN_FILE', '/var/run/tp/token'],
    ]),
    'TP_PORTS=8080\nAPI_TOKEN=<redacted>\nDB_PASSWORD=<redacted>\nTLS_KEY=<from secret tls/key>\nTP_MANAGER_TOKEN_FILE=/var/run/tp/token\n',
  );
  assert.is(
    redactLog('auth: Bearer eyJhbGciOi.x-y_z\n{"token":"s3cr3t","port":8080} password=pw user=bob\n'),
    'auth: Bearer <redacted>\n{"token":"<redacted>","port":8080} password=<redacted> user=bob\n',
  );
});

test('the daemon logs chosen by --daemons; the archive holds them and its index', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-gather-'));
  try {
    for (const f of ['connector.log', 'daemon.log', 'other.txt'])
      fs.writeFileSync(path.join(dir, f), `${f}\n`);
    const names = (choice: 'all' | 'user' | 'root' | 'none') =>
      daemonLogFiles(dir, choice).map((f) => path.basename(f));
    assert.equal(names('all'), ['connector.log', 'daemon.log']);
    assert.equal(names('user'), ['connector.log']);
    assert.equal(names('root'), ['daemon.log']);
    assert.equal(names('none'), []);
    const file = path.join(dir, 'out.tar.gz');
    const now = new Date('2026-12-04T00:00:00Z');
    const index = await writeArchive(
      file,
      [{ name: 'daemons/connector.log', source: 'x', content: 'hello\n' }],
      ['log of a/b/c: forbidden'],
      { now, version: '9.9.9' },
    );
    assert.equal(index.files, [{ name: 'daemons/connector.log', source: 'x', bytes: 6 }]);
    const read = await readArchive(file);
    assert.equal([...read.keys()], ['tp-logs/index.json', 'tp-logs/daemons/connector.log']);
    assert.is(read.get('tp-logs/daemons/connector.log'), 'hello\n');
    const stored = JSON.parse(read.get('tp-logs/index.json')!);
    assert.equal(stored.errors, ['log of a/b/c: forbidden']);
    assert.is(stored.tpVersion, '9.9.9');
    assert.is(fs.statSync(file).mode & 0o777, 0o600, 'logs are private');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
