import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type ImageContext, ImageError, imageRepository, resolveImage } from './table.js';

const ctx: ImageContext = {
  nodePath: '/usr/bin/node',
  tpRoot: '/work/tp',
  tpBins: {
    'tp-manager': 'dist/manager/main.js',
    'tp-agent': 'dist/bundle/tp-agent.cjs',
    'tp-init': 'dist/init-container/main.js',
  },
  labBinDir: '/cache/bin',
};

test('image references reduce to the repository', () => {
  assert.is(imageRepository('lab/echo'), 'lab/echo');
  assert.is(imageRepository('lab/echo:1.2'), 'lab/echo');
  assert.is(imageRepository('docker.io/lab/echo:latest'), 'lab/echo');
  assert.is(imageRepository('localhost:5000/tp/tp:0.1.0'), 'tp/tp');
  assert.is(imageRepository('tp/tp@sha256:abcd'), 'tp/tp');
  assert.is(imageRepository('docker.io/library/busybox'), 'busybox');
});

test('tp/tp: command[0] picks the binary of this checkout, the rest are its arguments', () => {
  assert.equal(
    resolveImage({ image: 'tp/tp:0.1.0', command: ['tp-agent'], args: ['--port', '1'] }, ctx).argv,
    ['/usr/bin/node', '/work/tp/dist/bundle/tp-agent.cjs', '--port', '1'],
  );
  assert.equal(resolveImage({ image: 'tp/tp', args: ['tp-init', 'x'] }, ctx).argv.slice(1), [
    '/work/tp/dist/init-container/main.js',
    'x',
  ]);
  assert.throws(
    () => resolveImage({ image: 'tp/tp', command: ['tp'] }, ctx),
    (e: unknown) => e instanceof ImageError && !e.notInTable,
  );
});

test('lab/echo, lab/shell and lab/coredns', () => {
  assert.equal(resolveImage({ image: 'lab/echo' }, ctx).argv, [
    '/usr/bin/node',
    '/work/tp/dist/lab/images/echo/main.js',
  ]);
  assert.equal(resolveImage({ image: 'lab/shell', command: ['sh', '-c'], args: ['sleep 1'] }, ctx).argv, [
    'sh',
    '-c',
    'sleep 1',
  ]);
  assert.equal(resolveImage({ image: 'lab/shell' }, ctx).argv, ['sh']);
  assert.equal(resolveImage({ image: 'lab/coredns', args: ['-conf', '/etc/coredns/Corefile'] }, ctx).argv, [
    '/cache/bin/coredns',
    '-conf',
    '/etc/coredns/Corefile',
  ]);
  assert.throws(() => resolveImage({ image: 'lab/coredns' }, { ...ctx, labBinDir: undefined }), /--lab-bin/);
});

test('an image outside the table cannot be pulled, and the message names the table', () => {
  try {
    resolveImage({ image: 'nginx:1.27' }, ctx);
    assert.unreachable();
  } catch (err) {
    assert.ok(err instanceof ImageError && err.notInTable);
    assert.match(
      (err as Error).message,
      /nginx:1\.27 cannot be pulled: the lab runs only the images in its table \(lab\/README\.md\): tp\/tp, lab\/echo, lab\/shell, lab\/coredns/,
    );
  }
  assert.is.not(
    resolveImage({ image: 'lab/echo' }, ctx).imageId,
    resolveImage({ image: 'lab/shell' }, ctx).imageId,
  );
});

test.run();
