import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../netaddr/parse.js';
import type { LddResult } from './ldd.js';
import { canonicalPath, type HostStat, type HostView, type RootfsEntry, resolveLayers } from './rootfs.js';

type FakeNode = { file: number; mode?: number } | { link: string } | 'dir';

/** A host of a few files: Debian's merged /usr, a loader, libc, a tool, a busybox. */
function fakeHost(extra: Record<string, FakeNode> = {}, ldd: Record<string, LddResult> = {}): HostView {
  const tree: Record<string, FakeNode> = {
    '/lib': { link: 'usr/lib' },
    '/lib64': { link: 'usr/lib64' },
    '/bin': { link: 'usr/bin' },
    '/usr': 'dir',
    '/usr/bin': 'dir',
    '/usr/lib': 'dir',
    '/usr/lib64': 'dir',
    '/usr/lib64/ld-linux-x86-64.so.2': { link: '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2' },
    '/usr/lib/x86_64-linux-gnu': 'dir',
    '/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2': { file: 200, mode: 0o755 },
    '/usr/lib/x86_64-linux-gnu/libc.so.6': { file: 1900, mode: 0o755 },
    '/usr/lib/x86_64-linux-gnu/libz.so.1': { link: 'libz.so.1.2.13' },
    '/usr/lib/x86_64-linux-gnu/libz.so.1.2.13': { file: 120 },
    '/usr/lib/x86_64-linux-gnu/ext': 'dir',
    '/usr/lib/x86_64-linux-gnu/ext/a.so': { file: 10 },
    '/usr/lib/x86_64-linux-gnu/ext/b.so': { file: 11 },
    '/usr/lib/x86_64-linux-gnu/ext/README': { file: 5 },
    '/usr/bin/tool': { file: 50, mode: 0o755 },
    '/usr/bin/busybox': { file: 2000, mode: 0o755 },
    ...extra,
  };
  const libc: LddResult = {
    kind: 'dynamic',
    libraries: [
      { name: 'libz.so.1', path: '/lib/x86_64-linux-gnu/libz.so.1' },
      { name: 'libc.so.6', path: '/lib/x86_64-linux-gnu/libc.so.6' },
    ],
    loader: '/lib64/ld-linux-x86-64.so.2',
    missing: [],
  };
  return {
    lstat: async (p): Promise<HostStat | undefined> => {
      const node = tree[p];
      if (node === undefined) return undefined;
      if (node === 'dir') return { type: 'dir', mode: 0o40755, size: 0 };
      if ('link' in node) return { type: 'symlink', mode: 0o120777, size: 0 };
      return { type: 'file', mode: 0o100000 | (node.mode ?? 0o644), size: node.file };
    },
    readlink: async (p) => (tree[p] as { link: string }).link,
    readdir: async (dir) =>
      Object.keys(tree)
        .filter((p) => p.startsWith(`${dir}/`) && !p.slice(dir.length + 1).includes('/'))
        .map((p) => p.slice(dir.length + 1)),
    ldd: async (p) => ldd[p] ?? (p.endsWith('busybox') ? { kind: 'static' } : libc),
    busyboxApplets: async () => ['bin/busybox', 'linuxrc', 'bin/sh', 'usr/bin/env', 'sbin/ip'],
    strip: async (p) => ({ path: `/scratch/stripped-${p.split('/').pop()}`, size: 40 }),
  };
}

/** The message a promise fails with ('' when it does not fail). */
const failure = (p: Promise<unknown>) =>
  p.then(
    () => '',
    (e: Error) => e.message,
  );
const paths = (entries: RootfsEntry[]) => entries.map((e) => e.path);
const find = (entries: RootfsEntry[], p: string) => entries.find((e) => e.path === p);

test('a host file arrives with the symlinks that lead to it, under canonical paths, parents first', async () => {
  const [layer] = await resolveLayers(
    [{ comment: 'libz', items: [{ copy: '/lib/x86_64-linux-gnu/libz.so.1' }] }],
    fakeHost(),
  );
  assert.equal(paths(layer!), [
    '/lib',
    '/usr',
    '/usr/lib',
    '/usr/lib/x86_64-linux-gnu',
    '/usr/lib/x86_64-linux-gnu/libz.so.1',
    '/usr/lib/x86_64-linux-gnu/libz.so.1.2.13',
  ]);
  assert.equal(find(layer!, '/lib'), { type: 'symlink', path: '/lib', target: 'usr/lib' });
  assert.equal(find(layer!, '/usr/lib/x86_64-linux-gnu/libz.so.1.2.13'), {
    type: 'file',
    path: '/usr/lib/x86_64-linux-gnu/libz.so.1.2.13',
    mode: 0o644,
    uid: 0,
    gid: 0,
    source: { host: '/usr/lib/x86_64-linux-gnu/libz.so.1.2.13', size: 120 },
  });
  assert.equal(find(layer!, '/usr'), { type: 'dir', path: '/usr', mode: 0o755, uid: 0, gid: 0 });
});

test('libraries: the ldd closure comes along, the loader through its absolute symlink', async () => {
  const [layer] = await resolveLayers(
    [
      {
        comment: 'tool',
        items: [{ copy: '/usr/bin/tool', to: '/usr/local/bin/tool', strip: true, libraries: true }],
      },
    ],
    fakeHost(),
  );
  const files = layer!.filter((e) => e.type !== 'dir');
  assert.equal(paths(files), [
    '/lib',
    '/lib64',
    '/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
    '/usr/lib/x86_64-linux-gnu/libc.so.6',
    '/usr/lib/x86_64-linux-gnu/libz.so.1',
    '/usr/lib/x86_64-linux-gnu/libz.so.1.2.13',
    '/usr/lib64/ld-linux-x86-64.so.2',
    '/usr/local/bin/tool',
  ]);
  // Copied to another path: no symlink chain; stripped: the scratch copy is read.
  const tool = find(layer!, '/usr/local/bin/tool');
  assert.equal(tool?.type === 'file' && tool.source, { host: '/scratch/stripped-tool', size: 40 });
  assert.is(tool?.type === 'file' && tool.mode, 0o755);
});

test('busybox: one symlink per applet, at canonical paths, to the binary', async () => {
  const [, layer] = await resolveLayers(
    [
      { comment: 'base', items: [{ symlink: '/sbin', target: 'usr/sbin' }] },
      { comment: 'busybox', items: [{ busybox: '/bin/busybox' }] },
    ],
    fakeHost(),
  );
  const links = layer!.filter((e) => e.type === 'symlink');
  assert.equal(links, [
    { type: 'symlink', path: '/bin', target: 'usr/bin' },
    { type: 'symlink', path: '/usr/bin/env', target: '/usr/bin/busybox' },
    { type: 'symlink', path: '/usr/bin/sh', target: '/usr/bin/busybox' },
    { type: 'symlink', path: '/usr/sbin/ip', target: '/usr/bin/busybox' },
  ]);
  assert.ok(find(layer!, '/usr/sbin'), 'the applet directory is created');
});

test('copyDir takes the files with the suffix, each with its closure', async () => {
  const [layer] = await resolveLayers(
    [
      {
        comment: 'ext',
        items: [{ copyDir: '/usr/lib/x86_64-linux-gnu/ext', suffix: '.so', libraries: true }],
      },
    ],
    fakeHost(),
  );
  assert.ok(find(layer!, '/usr/lib/x86_64-linux-gnu/ext/a.so'));
  assert.ok(find(layer!, '/usr/lib/x86_64-linux-gnu/ext/b.so'));
  assert.not.ok(find(layer!, '/usr/lib/x86_64-linux-gnu/ext/README'));
  assert.ok(find(layer!, '/usr/lib/x86_64-linux-gnu/libc.so.6'));
});

test('an entry equal to one in a lower layer is left out; parents keep the mode declared anywhere', async () => {
  const layers = await resolveLayers(
    [
      {
        comment: 'base',
        items: [
          { dir: '/tmp', mode: 0o1777 },
          { symlink: '/lib', target: 'usr/lib' },
        ],
      },
      {
        comment: 'app',
        items: [
          { symlink: '/lib', target: 'usr/lib' },
          { file: '/tmp/x', data: 'x' },
          { file: '/home/tp/.profile', data: '', uid: 7777, gid: 7777 },
        ],
      },
      { comment: 'home', items: [{ dir: '/home/tp', mode: 0o700, uid: 7777, gid: 7777 }] },
    ],
    fakeHost(),
  );
  assert.equal(paths(layers[1]!), ['/home', '/home/tp', '/home/tp/.profile', '/tmp/x']);
  assert.equal(find(layers[1]!, '/home/tp'), {
    type: 'dir',
    path: '/home/tp',
    mode: 0o700,
    uid: 7777,
    gid: 7777,
  });
  assert.equal(layers[2], [], 'declared above, already present below');
});

test('two different entries for one path are refused, naming both', async () => {
  try {
    await resolveLayers(
      [
        { comment: 'one', items: [{ file: '/etc/passwd', data: 'root' }] },
        { comment: 'two', items: [{ file: '/etc/passwd', data: 'root+tp' }] },
      ],
      fakeHost(),
    );
    assert.unreachable();
  } catch (err) {
    assert.instance(err, UsageError);
    assert.match(
      (err as Error).message,
      '/etc/passwd is a file generated (4 bytes) (mode 644, 0:0) in layer "one" but a file generated (7 bytes)',
    );
  }
  const twice = resolveLayers(
    [
      {
        comment: 'one',
        items: [
          { symlink: '/usr/sbin/iptables', target: 'xtables-nft-multi' },
          { symlink: '/usr/sbin/iptables', target: 'xtables-legacy-multi' },
        ],
      },
    ],
    fakeHost(),
  );
  assert.match(await failure(twice), /declared twice in layer "one"/);
});

test('a missing host file names the package to install', async () => {
  const absent = resolveLayers(
    [{ comment: 'x', items: [{ copy: '/usr/sbin/xtables-nft-multi', package: 'iptables' }] }],
    fakeHost(),
  );
  assert.match(
    await failure(absent),
    /\/usr\/sbin\/xtables-nft-multi is missing on this host: install the Debian package iptables \(apt-get install iptables\)/,
  );
});

test('canonical paths resolve symlinked parents only, relative and absolute, and stop at loops', () => {
  const links = new Map([
    ['/bin', 'usr/bin'],
    ['/usr/lib64', '/usr/lib'],
    ['/loop', '/loop'],
  ]);
  assert.is(canonicalPath('/bin/sh', links), '/usr/bin/sh');
  assert.is(canonicalPath('/bin', links), '/bin');
  assert.is(canonicalPath('/usr/lib64/x/y', links), '/usr/lib/x/y');
  assert.throws(() => canonicalPath('/loop/x', links), /symbolic link loop/);
});

test.run();
