// Remote mounts for real on this host, without a cluster: the workstation's sshfs (RemoteMounts) and the
// agent's sftp-server (agent/file-server.ts) joined by a plain socket pipe where the tunnel would be. A
// ConfigMap-like symlink farm and a file only root may write; read-only; unmount on request and after
// the sshfs was killed -9 (the next daemon's cleanup).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as assert from 'uvu/assert';
import { SFTP_SERVER, sftpDialer } from '../../agent/file-server.js';
import { createLogger, setLevel } from '../../logging/logger.js';
import { requirementSuite } from '../../testbed/suite.js';
import type { FlowOutcome } from '../../tunnel/flow.js';
import { isMounted, RemoteMounts } from './mounts.js';

setLevel('error');

function missing(): string | undefined {
  if (!fs.existsSync(SFTP_SERVER)) return `${SFTP_SERVER} is missing (apt-get install openssh-sftp-server)`;
  const sshfs = (process.env.PATH ?? '').split(':').some((d) => fs.existsSync(path.join(d, 'sshfs')));
  if (!sshfs) return 'sshfs is missing (apt-get install sshfs)';
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return '/dev/fuse is not usable by this user';
  }
  return undefined;
}

const { test, ready } = requirementSuite('remote mounts (sshfs <-> sftp-server)', missing());

if (ready) {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-mounts-test-'));
  const remote = path.join(scratch, 'remote');
  const stateFile = path.join(scratch, 'mounts.json');
  const log = createLogger('test');

  /** What the tunnel does, minus the tunnel: the two sockets piped together. */
  const open = (socket: net.Socket): Promise<FlowOutcome> =>
    sftpDialer(
      remote,
      SFTP_SERVER,
      log,
    )(new AbortController().signal).then((server) => {
      socket.pipe(server);
      server.pipe(socket);
      return new Promise<FlowOutcome>((resolve) =>
        server.on('close', () => resolve({ kind: 'closed', bytesIn: 0, bytesOut: 0 })),
      );
    });

  test.before(() => {
    // A ConfigMap volume as the kubelet writes it: ..data -> a timestamped dir, keys -> ..data/key.
    fs.mkdirSync(path.join(remote, 'etc/cfg/..2026_12_04'), { recursive: true });
    fs.writeFileSync(path.join(remote, 'etc/cfg/..2026_12_04/config.yaml'), 'a: 1\nb: "two"\n');
    fs.symlinkSync('..2026_12_04', path.join(remote, 'etc/cfg/..data'));
    fs.symlinkSync('..data/config.yaml', path.join(remote, 'etc/cfg/config.yaml'));
    fs.mkdirSync(path.join(remote, 'etc/sec'), { recursive: true });
    fs.writeFileSync(path.join(remote, 'etc/sec/password'), Buffer.from([0, 1, 2, 255, 10]), { mode: 0o644 });
  });

  test.after(async () => {
    await new RemoteMounts(stateFile).unmountAll();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('mount: the same bytes through symlinks, read-only; unmount leaves nothing', async () => {
    const mounts = new RemoteMounts(stateFile);
    const dir = await mounts.mount('echo', '', open);
    try {
      assert.ok(isMounted(dir));
      // Asynchronous file access only: this process pumps the bytes sshfs waits for (the daemon's role).
      assert.is(await fsp.readFile(path.join(dir, 'etc/cfg/config.yaml'), 'utf8'), 'a: 1\nb: "two"\n');
      assert.equal([...(await fsp.readFile(path.join(dir, 'etc/sec/password')))], [0, 1, 2, 255, 10]);
      await fsp.writeFile(path.join(dir, 'etc/new'), 'x').then(
        () => assert.unreachable('wrote into a read-only mount'),
        (e: NodeJS.ErrnoException) => assert.is(e.code, 'EROFS'),
      );
      assert.equal(JSON.parse(fs.readFileSync(stateFile, 'utf8'))[0].mountPoint, dir);
    } finally {
      await mounts.unmount('echo');
    }
    assert.not.ok(isMounted(dir));
    assert.not.ok(fs.existsSync(dir), 'the directory the daemon made is gone');
    assert.not.ok(fs.existsSync(stateFile));
  });

  test('a daemon that died: the next one unmounts the stale mount (sshfs killed -9) and removes it', async () => {
    const dir = path.join(scratch, 'explicit');
    const first = new RemoteMounts(stateFile);
    await first.mount('echo', dir, open);
    // What a kill -9 of the user daemon leaves: a mount whose sshfs is gone.
    const live = (first as unknown as { live: Map<string, { sshfs: { child: { pid?: number } } }> }).live;
    const pid = live.get('echo')?.sshfs.child.pid ?? 0;
    assert.ok(pid > 0);
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(isMounted(dir), 'the dead mount is still there');
    const next = new RemoteMounts(stateFile);
    const stale = await next.cleanStale();
    assert.equal(
      stale.map((s) => s.mountPoint),
      [dir],
    );
    assert.not.ok(isMounted(dir));
    assert.not.ok(fs.existsSync(dir));
  });

  test('a mount point that is not empty is refused', async () => {
    const dir = path.join(scratch, 'full');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'f'), 'x');
    await new RemoteMounts(stateFile).mount('echo', dir, open).then(
      () => assert.unreachable('mounted over files'),
      (e: Error) => assert.match(e.message, /is not an empty directory/),
    );
  });
}

test.run();
