// Remote mounts for real on this host, without a cluster: the workstation's sshfs (RemoteMounts) and the
// agent's sftp-server (agent/file-server.ts) joined by a plain socket pipe where the tunnel would be. A
// ConfigMap-like symlink farm and a file only root may write; read-only; read-write where the volume is
// (the agent's mountinfo faked: data/ read-write, etc/ read-only); unmount on request and after the
// sshfs was killed -9 (the next daemon's cleanup); mounted again after the flow broke.
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

  /** The agent's volumes as its /proc/self/mountinfo would list them. */
  const mountinfo = () =>
    [
      `40 30 0:50 / ${remote}/etc/cfg ro,relatime - tmpfs tmpfs ro`,
      `41 30 0:51 / ${remote}/etc/sec ro,relatime - tmpfs tmpfs ro`,
      `42 30 8:1 /data ${remote}/data rw,relatime - ext4 /dev/sda1 rw`,
    ].join('\n');
  /** The server side of the last flow, to break it. */
  let lastServer: net.Socket | undefined;
  /** What the tunnel does, minus the tunnel: the two sockets piped together. */
  const opener =
    (readWrite: boolean) =>
    (socket: net.Socket): Promise<FlowOutcome> =>
      sftpDialer(
        remote,
        readWrite,
        SFTP_SERVER,
        log,
        mountinfo,
      )(new AbortController().signal).then((server) => {
        lastServer = server;
        // A broken flow resets; the daemon's flow code takes errors, this pipe ignores them.
        socket.on('error', () => {});
        server.on('error', () => {});
        socket.pipe(server);
        server.pipe(socket);
        // An sshfs that ended without a FIN (killed) still ends the flow, as a reset would.
        socket.on('close', () => server.destroy());
        return new Promise<FlowOutcome>((resolve) =>
          server.on('close', () => {
            // As a tunnel flow does: the far end gone, sshfs's end goes too.
            socket.destroy();
            resolve({ kind: 'closed', bytesIn: 0, bytesOut: 0 });
          }),
        );
      });
  const open = opener(false);
  const refused = (p: Promise<unknown>, code: string) =>
    p.then(
      () => assert.unreachable(`expected ${code}`),
      (e: NodeJS.ErrnoException) => assert.is(e.code, code),
    );

  test.before(() => {
    // A ConfigMap volume as the kubelet writes it: ..data -> a timestamped dir, keys -> ..data/key.
    fs.mkdirSync(path.join(remote, 'etc/cfg/..2026_12_04'), { recursive: true });
    fs.writeFileSync(path.join(remote, 'etc/cfg/..2026_12_04/config.yaml'), 'a: 1\nb: "two"\n');
    fs.symlinkSync('..2026_12_04', path.join(remote, 'etc/cfg/..data'));
    fs.symlinkSync('..data/config.yaml', path.join(remote, 'etc/cfg/config.yaml'));
    fs.mkdirSync(path.join(remote, 'etc/sec'), { recursive: true });
    fs.writeFileSync(path.join(remote, 'etc/sec/password'), Buffer.from([0, 1, 2, 255, 10]), { mode: 0o644 });
    fs.mkdirSync(path.join(remote, 'data'));
  });

  test.after(async () => {
    await new RemoteMounts(stateFile).unmountAll();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('mount: the same bytes through symlinks, read-only; unmount leaves nothing', async () => {
    const mounts = new RemoteMounts(stateFile);
    const dir = await mounts.mount('echo', '', false, open);
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
    await first.mount('echo', dir, false, open);
    // What a kill -9 of the user daemon leaves: a mount whose sshfs is gone.
    const live = (first as unknown as { live: Map<string, { sshfs: { child: { pid?: number } } }> }).live;
    const pid = live.get('echo')?.sshfs.child.pid ?? 0;
    assert.ok(pid > 0);
    // A dead daemon does not see its flow end (a live one would detach the mount and wait to remount).
    live.delete('echo');
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
    await new RemoteMounts(stateFile).mount('echo', dir, false, open).then(
      () => assert.unreachable('mounted over files'),
      (e: Error) => assert.match(e.message, /is not an empty directory/),
    );
  });

  test(':rw writes where the volume is read-write, and only there', async () => {
    const mounts = new RemoteMounts(stateFile);
    const dir = await mounts.mount('echo', '', true, opener(true));
    try {
      await fsp.writeFile(path.join(dir, 'data/new'), 'from the workstation');
      assert.is(fs.readFileSync(path.join(remote, 'data/new'), 'utf8'), 'from the workstation');
      await fsp.mkdir(path.join(dir, 'data/sub'));
      await fsp.rename(path.join(dir, 'data/new'), path.join(dir, 'data/sub/moved'));
      assert.ok(fs.existsSync(path.join(remote, 'data/sub/moved')));
      // A ConfigMap-like volume, and the agent's own directories between the volumes: refused.
      await refused(fsp.writeFile(path.join(dir, 'etc/cfg/new'), 'x'), 'EACCES');
      await refused(fsp.unlink(path.join(dir, 'etc/cfg/config.yaml')), 'EACCES');
      await refused(fsp.writeFile(path.join(dir, 'etc/new'), 'x'), 'EACCES');
      await refused(fsp.rename(path.join(dir, 'data/sub/moved'), path.join(dir, 'etc/cfg/moved')), 'EACCES');
      // No symlinks and no hardlinks made through a mount (they could point out of the volumes).
      await refused(fsp.symlink('/etc/passwd', path.join(dir, 'data/link')), 'EACCES');
      assert.not.ok(fs.existsSync(path.join(remote, 'data/link')));
      assert.equal(mounts.mountOf('echo'), { mountPoint: dir, readWrite: true });
    } finally {
      await mounts.unmount('echo');
    }
  });

  test('the flow breaks: the mount point stays, onLost is told, remount brings the files back', async () => {
    const mounts = new RemoteMounts(stateFile);
    const lost = new Promise<string>((resolve) => {
      mounts.onLost = resolve;
    });
    const dir = await mounts.mount('echo', '', false, open);
    try {
      // sshfs may answer "mounted" before its SFTP handshake: a read makes sure this mount's flow is up.
      assert.is(await fsp.readFile(path.join(dir, 'etc/cfg/config.yaml'), 'utf8'), 'a: 1\nb: "two"\n');
      lastServer!.destroy();
      assert.is(await lost, 'echo');
      assert.ok(mounts.isLost('echo'));
      assert.not.ok(isMounted(dir), 'the dead mount is detached');
      assert.ok(fs.existsSync(dir), 'the mount point stays');
      await mounts.remount('echo', open);
      assert.not.ok(mounts.isLost('echo'));
      assert.is(await fsp.readFile(path.join(dir, 'etc/cfg/config.yaml'), 'utf8'), 'a: 1\nb: "two"\n');
    } finally {
      await mounts.unmount('echo');
    }
    assert.not.ok(fs.existsSync(dir));
  });
}

test.run();
