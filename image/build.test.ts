// The archive a build writes, read back: OCI layout and docker-archive over the same blobs, digests
// that match the bytes, deterministic bytes, reuse while the inputs are unchanged. Only generated files
// and a scratch host file: no ldd, no strip, no ldconfig.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import * as tar from 'tar-stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildImage, type ImageSpec, specFingerprint } from './build.js';
import { ANNOTATIONS, MEDIA_TYPES, sha256 } from './oci.js';
import { ociArchitecture } from './platform.js';

interface TarFile {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: string | null;
  data: Buffer;
}

async function readTar(data: Buffer): Promise<TarFile[]> {
  const files: TarFile[] = [];
  const extract = tar.extract();
  Readable.from([data]).pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    const h = entry.header;
    files.push({
      name: h.name,
      type: h.type,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      mtime: h.mtime.getTime() / 1000,
      linkname: h.linkname,
      data: Buffer.concat(chunks),
    });
  }
  return files;
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-image-test-'));
const hostFile = path.join(scratch, 'tool');
fs.writeFileSync(hostFile, '#!/bin/sh\necho tool\n', { mode: 0o755 });

function spec(data = 'hello\n'): ImageSpec {
  return {
    name: 'lab/test:1',
    layers: [
      {
        comment: 'base',
        items: [
          { symlink: '/bin', target: 'usr/bin' },
          { dir: '/tmp', mode: 0o1777 },
        ],
      },
      {
        comment: 'app',
        items: [
          { copy: hostFile, to: '/bin/tool' },
          { file: '/etc/greeting', data },
          { dir: '/home/app', uid: 7777, gid: 7777 },
        ],
      },
    ],
    config: { user: '7777:7777', cmd: ['tool'], env: ['PATH=/usr/bin'], labels: { a: 'b' } },
  };
}

test('the archive is an OCI layout and a docker-archive over the same blobs, sorted, timestamps fixed', async () => {
  const archive = path.join(scratch, 'a.tar');
  const built = await buildImage(spec(), archive, { epoch: 0 });
  const files = await readTar(fs.readFileSync(archive));
  assert.equal(
    files.map((f) => f.name),
    [
      'blobs/',
      'blobs/sha256/',
      ...files.filter((f) => f.type === 'file' && f.name.startsWith('blobs/')).map((f) => f.name),
      'index.json',
      'manifest.json',
      'oci-layout',
    ],
  );
  const blobNames = files
    .filter((f) => f.name.startsWith('blobs/sha256/') && f.type === 'file')
    .map((f) => f.name);
  assert.equal(blobNames, [...blobNames].sort());
  assert.ok(files.every((f) => f.mtime === 0 && f.uid === 0 && f.gid === 0));
  const file = (name: string) => files.find((f) => f.name === name)!.data;
  const blob = (digest: string) => file(`blobs/${digest.replace(':', '/')}`);
  for (const name of blobNames) assert.is(sha256(file(name)), `sha256:${name.split('/').pop()}`, name);

  assert.equal(JSON.parse(file('oci-layout').toString()), { imageLayoutVersion: '1.0.0' });
  const index = JSON.parse(file('index.json').toString());
  assert.equal(index, {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: [
      {
        mediaType: MEDIA_TYPES.manifest,
        digest: built.manifestDigest,
        size: blob(built.manifestDigest).length,
        annotations: {
          [ANNOTATIONS.containerdName]: 'docker.io/lab/test:1',
          [ANNOTATIONS.refName]: 'docker.io/lab/test:1',
        },
        platform: { architecture: ociArchitecture(), os: 'linux' },
      },
    ],
  });
  const manifest = JSON.parse(blob(built.manifestDigest).toString());
  assert.is(manifest.mediaType, MEDIA_TYPES.manifest);
  assert.equal(manifest.config, {
    mediaType: MEDIA_TYPES.config,
    digest: built.imageId,
    size: blob(built.imageId).length,
  });
  assert.equal(
    manifest.layers.map((l: { mediaType: string; digest: string }) => [l.mediaType, l.digest]),
    built.layers.map((l) => [MEDIA_TYPES.layer, l.digest]),
  );

  const docker = JSON.parse(file('manifest.json').toString());
  assert.equal(docker, [
    {
      Config: `blobs/${built.imageId.replace(':', '/')}`,
      RepoTags: ['lab/test:1'],
      Layers: built.layers.map((l) => `blobs/${l.digest.replace(':', '/')}`),
    },
  ]);

  const config = JSON.parse(blob(built.imageId).toString());
  assert.equal(config.config, {
    User: '7777:7777',
    Env: ['PATH=/usr/bin'],
    Cmd: ['tool'],
    Labels: { a: 'b' },
  });
  assert.is(config.created, '1970-01-01T00:00:00Z');
  assert.equal(
    config.rootfs.diff_ids,
    built.layers.map((l) => sha256(zlib.gunzipSync(blob(l.digest)))),
  );
  assert.equal(
    config.history.map((h: { comment: string }) => h.comment),
    ['base', 'app'],
  );

  const app = await readTar(zlib.gunzipSync(blob(built.layers[1]!.digest)));
  assert.equal(
    app.map((f) => [f.name, f.type, f.mode.toString(8), f.uid, f.linkname]),
    [
      ['etc/', 'directory', '755', 0, null],
      ['etc/greeting', 'file', '644', 0, null],
      ['home/', 'directory', '755', 0, null],
      ['home/app/', 'directory', '755', 7777, null],
      ['usr/', 'directory', '755', 0, null],
      ['usr/bin/', 'directory', '755', 0, null],
      ['usr/bin/tool', 'file', '755', 0, null],
    ],
  );
  assert.is(app.find((f) => f.name === 'usr/bin/tool')!.data.toString(), '#!/bin/sh\necho tool\n');
  const base = await readTar(zlib.gunzipSync(blob(built.layers[0]!.digest)));
  assert.equal(
    base.map((f) => [f.name, f.type, f.mode.toString(8), f.linkname]),
    [
      ['bin', 'symlink', '777', 'usr/bin'],
      ['tmp/', 'directory', '1777', null],
    ],
  );
});

test('the same inputs give byte-identical archives; SOURCE_DATE_EPOCH sets every timestamp', async () => {
  const a = path.join(scratch, 'same-a.tar');
  const b = path.join(scratch, 'same-b.tar');
  await buildImage(spec(), a, { epoch: 0 });
  await buildImage(spec(), b, { epoch: 0, force: true });
  assert.ok(fs.readFileSync(a).equals(fs.readFileSync(b)));

  const c = path.join(scratch, 'epoch.tar');
  const built = await buildImage(spec(), c, { epoch: 1_700_000_000 });
  const files = await readTar(fs.readFileSync(c));
  assert.ok(files.every((f) => f.mtime === 1_700_000_000));
  const config = JSON.parse(
    files.find((f) => f.name === `blobs/${built.imageId.replace(':', '/')}`)!.data.toString(),
  );
  assert.is(config.created, '2023-11-14T22:13:20Z');
});

test('the archive is reused while the spec and every host file are unchanged, rebuilt otherwise', async () => {
  const archive = path.join(scratch, 'reuse.tar');
  const first = await buildImage(spec(), archive, { epoch: 0 });
  assert.is(first.reused, false);
  const again = await buildImage(spec(), archive, { epoch: 0 });
  assert.is(again.reused, true);
  assert.is(again.manifestDigest, first.manifestDigest);
  // A host file changed: its metadata no longer matches the record.
  fs.writeFileSync(hostFile, '#!/bin/sh\necho tool v2\n');
  const changed = await buildImage(spec(), archive, { epoch: 0 });
  assert.is(changed.reused, false);
  assert.is.not(changed.manifestDigest, first.manifestDigest);
  // The spec changed.
  assert.is((await buildImage(spec('bye\n'), archive, { epoch: 0 })).reused, false);
  assert.is.not(specFingerprint(spec('a'), 0, 'code'), specFingerprint(spec('b'), 0, 'code'));
  assert.is.not(specFingerprint(spec(), 0, 'code'), specFingerprint(spec(), 1, 'code'));
});

test('a failed build leaves no archive and no scratch file behind', async () => {
  const archive = path.join(scratch, 'fail', 'x.tar');
  const bad = spec();
  bad.layers[1]!.items.push({ copy: path.join(scratch, 'absent') });
  const message = await buildImage(bad, archive, { epoch: 0 }).then(
    () => '',
    (e: Error) => e.message,
  );
  assert.match(message, /absent is missing on this host/);
  assert.equal(fs.existsSync(path.dirname(archive)) ? fs.readdirSync(path.dirname(archive)) : [], []);
});

test.after(() => fs.rmSync(scratch, { recursive: true, force: true }));

test.run();
