// The mount server's confinement for real: OpenSSH's sftp-server behind agent/file-server's filter, on a
// socket, driven by a raw SFTP client (testbed/sftp-probe.ts) that asks for what sshfs never would: `..`
// escapes, absolute paths outside the served root, a symlink the app left pointing out of its volume,
// /proc, writes in a read-only session and on a read-only volume, symlink creation.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../logging/logger.js';
import { type ProbeRequest, probe } from '../testbed/sftp-probe.js';
import { requirementSuite } from '../testbed/suite.js';
import { confinement, SFTP_SERVER, sftpDialer, volumeMounts } from './file-server.js';
import { FX } from './sftp-filter.js';

setLevel('error');

const { test, ready } = requirementSuite(
  'file server confinement (sftp-server behind the filter)',
  fs.existsSync(SFTP_SERVER) ? undefined : `${SFTP_SERVER} is missing (apt-get install openssh-sftp-server)`,
);

if (ready) {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-file-server-test-'));
  const root = path.join(scratch, 'app');
  const mountinfo = () =>
    [
      `40 30 0:50 / ${root}/etc/cfg ro,relatime - tmpfs tmpfs ro`,
      `42 30 8:1 /data ${root}/data rw,relatime - ext4 /dev/sda1 rw`,
      `43 30 8:1 /x ${scratch}/elsewhere rw,relatime - ext4 /dev/sda1 rw`,
    ].join('\n');

  test.before(() => {
    fs.mkdirSync(path.join(root, 'etc/cfg/..2026_12_04'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc/cfg/..2026_12_04/config.yaml'), 'a: 1\n');
    fs.symlinkSync('..2026_12_04', path.join(root, 'etc/cfg/..data'));
    fs.symlinkSync('..data/config.yaml', path.join(root, 'etc/cfg/config.yaml'));
    fs.mkdirSync(path.join(root, 'data'));
    // What an app could leave in a shared emptyDir: symlinks out of the volume.
    fs.symlinkSync('/etc/passwd', path.join(root, 'data/passwd'));
    fs.symlinkSync('../../..', path.join(root, 'data/up'));
    fs.symlinkSync(path.join(scratch, 'created-outside'), path.join(root, 'data/dangling'));
    fs.writeFileSync(path.join(scratch, 'secret'), 'not served');
  });

  test.after(() => fs.rmSync(scratch, { recursive: true, force: true }));

  async function ask(readWrite: boolean, requests: ProbeRequest[]) {
    const socket = await sftpDialer(
      root,
      readWrite,
      SFTP_SERVER,
      createLogger('test'),
      mountinfo,
    )(new AbortController().signal);
    try {
      return await probe(socket, socket, requests);
    } finally {
      socket.destroy();
    }
  }

  const codes = (answers: { kind: string; code?: number }[]) =>
    answers.map((a) => (a.kind === 'status' ? a.code : a.kind));

  test('volumeMounts: the mount points below the root, read-write or not', () => {
    assert.equal(volumeMounts(root, mountinfo()), [
      { mountPoint: `${root}/etc/cfg`, rw: false },
      { mountPoint: `${root}/data`, rw: true },
    ]);
  });

  test('confinement: `..`-free paths resolve inside the root, symlinks followed or not as asked', () => {
    const c = confinement(root, true, mountinfo);
    assert.is(
      c.resolve('etc/cfg/config.yaml', true),
      path.join(fs.realpathSync(root), 'etc/cfg/..2026_12_04/config.yaml'),
    );
    assert.is(c.resolve('data/passwd', true), undefined);
    assert.is(c.resolve('data/passwd', false), path.join(fs.realpathSync(root), 'data/passwd'));
    assert.is(c.resolve('/etc/passwd', true), undefined);
    assert.is(c.resolve(path.join(root, 'data/new'), true), path.join(fs.realpathSync(root), 'data/new'));
    assert.ok(c.writable(path.join(fs.realpathSync(root), 'data/new')));
    assert.not.ok(c.writable(path.join(fs.realpathSync(root), 'etc/cfg/x')));
    assert.not.ok(c.writable(path.join(fs.realpathSync(root), 'etc/x')));
  });

  test('inside the volumes: files, directories and the root answer', async () => {
    const a = await ask(false, [
      { op: 'realpath', path: '.' },
      { op: 'stat', path: 'etc/cfg/config.yaml' },
      { op: 'open', path: 'etc/cfg/config.yaml' },
      { op: 'opendir', path: 'etc/cfg' },
      { op: 'lstat', path: 'data/passwd' },
    ]);
    assert.equal(codes(a), ['name', 'attrs', 'handle', 'handle', 'attrs']);
    assert.is(a[0]!.name, fs.realpathSync(root));
  });

  test('outside the volumes: `..`, absolute paths, /proc, symlinks out: all refused', async () => {
    const a = await ask(true, [
      { op: 'open', path: '../secret' },
      { op: 'open', path: '../../../../../../etc/passwd' },
      { op: 'stat', path: 'etc/../../secret' },
      { op: 'open', path: '/etc/passwd' },
      { op: 'open', path: path.join(scratch, 'secret') },
      { op: 'open', path: '/proc/self/environ' },
      { op: 'opendir', path: '/' },
      { op: 'realpath', path: '..' },
      { op: 'open', path: 'data/passwd' },
      { op: 'stat', path: 'data/up/secret' },
      { op: 'opendir', path: 'data/up' },
    ]);
    assert.equal(
      codes(a),
      a.map(() => FX.PERMISSION_DENIED),
      JSON.stringify(a, null, 1),
    );
  });

  test('writes: refused in a read-only session, on a read-only volume, and symlinks always', async () => {
    const WRITE_CREATE = 0x02 | 0x08;
    const ro = await ask(false, [{ op: 'open', path: 'data/new', flags: WRITE_CREATE }]);
    assert.equal(codes(ro), [FX.PERMISSION_DENIED]);
    assert.match(ro[0]!.message!, /read-only/);
    const rw = await ask(true, [
      { op: 'open', path: 'data/new', flags: WRITE_CREATE },
      { op: 'open', path: 'etc/cfg/new', flags: WRITE_CREATE },
      { op: 'open', path: 'etc/new', flags: WRITE_CREATE },
      { op: 'symlink', path: 'data/link', target: '/etc/passwd' },
      // A dangling symlink the app left: creating through it would write outside the volume.
      { op: 'open', path: 'data/dangling', flags: WRITE_CREATE },
      { op: 'open', path: 'data/dangling/x', flags: WRITE_CREATE },
    ]);
    assert.equal(codes(rw), ['handle', ...Array(5).fill(FX.PERMISSION_DENIED)]);
    assert.not.ok(fs.existsSync(path.join(scratch, 'created-outside')));
    assert.ok(fs.existsSync(path.join(root, 'data/new')));
    assert.not.ok(fs.existsSync(path.join(root, 'etc/cfg/new')));
    assert.not.ok(fs.existsSync(path.join(root, 'data/link')));
  });
}

test.run();
