import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../netaddr/parse.js';
import { closureFiles, parseLdd } from './ldd.js';

// Real `ldd` outputs (stdout and stderr) captured on Debian 12; compiled to dist/image/, the sources'
// testdata is two levels up.
const testdata = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../image/testdata/ldd');
const fixture = (name: string) => fs.readFileSync(path.join(testdata, name), 'utf8');

test('a dynamic executable: every library with its path, the loader, the vDSO left out', () => {
  const r = parseLdd(fixture('node.txt'), 0, '/usr/bin/node');
  assert.equal(r, {
    kind: 'dynamic',
    libraries: [
      { name: 'libdl.so.2', path: '/lib/x86_64-linux-gnu/libdl.so.2' },
      { name: 'libstdc++.so.6', path: '/lib/x86_64-linux-gnu/libstdc++.so.6' },
      { name: 'libm.so.6', path: '/lib/x86_64-linux-gnu/libm.so.6' },
      { name: 'libgcc_s.so.1', path: '/lib/x86_64-linux-gnu/libgcc_s.so.1' },
      { name: 'libpthread.so.0', path: '/lib/x86_64-linux-gnu/libpthread.so.0' },
      { name: 'libc.so.6', path: '/lib/x86_64-linux-gnu/libc.so.6' },
    ],
    loader: '/lib64/ld-linux-x86-64.so.2',
    missing: [],
  });
  assert.equal(closureFiles(r, '/usr/bin/node').slice(-2), [
    '/lib/x86_64-linux-gnu/libc.so.6',
    '/lib64/ld-linux-x86-64.so.2',
  ]);
});

test('a shared library (dlopen()ed, e.g. libbpf.so.1) has its own closure', () => {
  const r = parseLdd(fixture('libbpf.txt'), 0, 'libbpf.so.1');
  assert.equal(
    closureFiles(r, 'libbpf.so.1'),
    ['libelf.so.1', 'libz.so.1', 'libc.so.6']
      .map((l) => `/lib/x86_64-linux-gnu/${l}`)
      .concat('/lib64/ld-linux-x86-64.so.2'),
  );
});

test('static binaries: "not a dynamic executable" (exit 1) and static-pie\'s "statically linked"', () => {
  assert.equal(parseLdd(fixture('busybox-static.txt'), 1, '/bin/busybox'), { kind: 'static' });
  assert.equal(parseLdd(fixture('static-pie.txt'), 0, './pause'), { kind: 'static' });
  assert.equal(closureFiles({ kind: 'static' }, '/bin/busybox'), []);
});

test('a library the host cannot find fails the closure, naming it and how to find its package', () => {
  const r = parseLdd(fixture('missing.txt'), 0, './missing');
  assert.ok(r.kind === 'dynamic');
  assert.equal(r.kind === 'dynamic' && r.missing, ['libtpmissing.so.1']);
  assert.throws(
    () => closureFiles(r, './missing'),
    (e: unknown) =>
      e instanceof UsageError && /libtpmissing\.so\.1.*apt-file search libtpmissing\.so\.1/.test(e.message),
  );
});

test('ldd failing, or a line it cannot read, is an error', () => {
  assert.throws(
    () => parseLdd('ldd: /nope: No such file or directory\n', 1, '/nope'),
    /ldd \/nope failed \(exit 1\): ldd: \/nope: No such file or directory/,
  );
  assert.throws(() => parseLdd('\tlibc.so.6 -> somewhere\n', 0, 'x'), /cannot read the line/);
  // Old glibc printed the vDSO with an empty arrow.
  assert.equal(parseLdd('\tlinux-vdso.so.1 =>  (0x00007ffd)\n', 0, 'x'), {
    kind: 'dynamic',
    libraries: [],
    loader: undefined,
    missing: [],
  });
});

test.run();
