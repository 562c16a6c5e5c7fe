import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { commonRunAsUser, containerMounts, hostTargets, writeVolume } from './mounts.js';

const sources = {
  resolvConf: '/s/etc/resolv.conf',
  hosts: '/s/etc/hosts',
  volume: (name: string) => (name === 'missing' ? undefined : `/s/volumes/${name}`),
  isFile: (p: string) => p.endsWith('.conf') || p.endsWith('Corefile'),
};

test('mounts: DNS files, volumes with subPath and readOnly, parents before children', () => {
  const mounts = containerMounts(
    {
      name: 'c',
      volumeMounts: [
        { name: 'cache', mountPath: '/data/cache' },
        { name: 'data', mountPath: '/data', readOnly: true },
        { name: 'cfg', mountPath: '/etc/coredns/Corefile', subPath: 'Corefile' },
      ],
    },
    sources,
  );
  assert.equal(
    mounts.map((m) => [m.target, m.source, m.readOnly, m.isFile]),
    [
      ['/data', '/s/volumes/data', true, false],
      ['/etc/hosts', '/s/etc/hosts', false, true],
      ['/etc/resolv.conf', '/s/etc/resolv.conf', false, true],
      ['/data/cache', '/s/volumes/cache', false, false],
      ['/etc/coredns/Corefile', '/s/volumes/cfg/Corefile', false, true],
    ],
  );
  // /data/cache lies inside the /data volume: created there, not on the host.
  assert.equal(
    hostTargets(mounts).map((m) => m.target),
    ['/data', '/etc/hosts', '/etc/resolv.conf', '/etc/coredns/Corefile'],
  );
});

test('bad mounts are configuration errors', () => {
  const one = (m: { name: string; mountPath: string; subPath?: string }) => () =>
    containerMounts({ name: 'c', volumeMounts: [m] }, sources);
  assert.throws(one({ name: 'missing', mountPath: '/x' }), /no such volume/);
  assert.throws(one({ name: 'v', mountPath: '/' }), /absolute path below/);
  assert.throws(one({ name: 'v', mountPath: 'relative' }), /absolute path below/);
  assert.throws(one({ name: 'v', mountPath: '/x', subPath: '../etc' }), /invalid subPath/);
});

test('volume files are replaced atomically, stale ones removed, modes and fsGroup applied', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-vol-'));
  try {
    const v = path.join(dir, 'v');
    const file = (p: string, text: string, mode = 0o644) => ({ path: p, data: Buffer.from(text), mode });
    assert.ok(
      writeVolume(
        v,
        { kind: 'files', files: [file('a', '1'), file('sub/b', '2', 0o600)] },
        { fsGroup: undefined, uid: undefined },
      ),
    );
    assert.is(fs.readFileSync(path.join(v, 'sub/b'), 'utf8'), '2');
    assert.is(fs.statSync(path.join(v, 'sub/b')).mode & 0o777, 0o600);
    assert.not.ok(
      writeVolume(
        v,
        { kind: 'files', files: [file('a', '1'), file('sub/b', '2', 0o600)] },
        { fsGroup: undefined, uid: undefined },
      ),
      'unchanged',
    );
    assert.ok(
      writeVolume(v, { kind: 'files', files: [file('a', 'new')] }, { fsGroup: 1234, uid: undefined }),
    );
    assert.is(fs.readFileSync(path.join(v, 'a'), 'utf8'), 'new');
    assert.not.ok(fs.existsSync(path.join(v, 'sub/b')), 'no longer projected: removed');
    assert.is(fs.statSync(path.join(v, 'a')).gid, 1234);
    assert.is(fs.statSync(path.join(v, 'a')).mode & 0o040, 0o040, 'group-readable for fsGroup');
    const empty = path.join(dir, 'e');
    writeVolume(empty, { kind: 'emptyDir' }, { fsGroup: undefined, uid: undefined });
    assert.is(fs.statSync(empty).mode & 0o777, 0o777);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a single non-root runAsUser shared by all containers owns the volume files', () => {
  assert.is(
    commonRunAsUser({
      spec: { securityContext: { runAsUser: 1000 }, containers: [{ name: 'a' }, { name: 'b' }] },
    }),
    1000,
  );
  assert.is(
    commonRunAsUser({
      spec: { containers: [{ name: 'a', securityContext: { runAsUser: 1 } }, { name: 'b' }] },
    }),
    undefined,
  );
  assert.is(commonRunAsUser({ spec: { containers: [{ name: 'a' }] } }), undefined);
});

test.run();
