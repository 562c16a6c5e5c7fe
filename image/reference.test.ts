import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { archiveFileName, familiarName, fullName, parseReference } from './reference.js';

test('names normalize as containerd does: docker.io and library/ filled in, registries kept', () => {
  const cases: [string, string, string, string][] = [
    ['tp/tp:0.1.0', 'docker.io/tp/tp:0.1.0', 'tp/tp:0.1.0', 'tp-tp-0.1.0.tar'],
    ['pause:3.10', 'docker.io/library/pause:3.10', 'pause:3.10', 'pause-3.10.tar'],
    [
      'registry.k8s.io/pause:3.10',
      'registry.k8s.io/pause:3.10',
      'registry.k8s.io/pause:3.10',
      'pause-3.10.tar',
    ],
    ['localhost:5000/lab/echo:1', 'localhost:5000/lab/echo:1', 'localhost:5000/lab/echo:1', 'lab-echo-1.tar'],
    [
      'docker.io/lab/coredns:1.14.2',
      'docker.io/lab/coredns:1.14.2',
      'lab/coredns:1.14.2',
      'lab-coredns-1.14.2.tar',
    ],
  ];
  for (const [name, full, familiar, file] of cases) {
    const ref = parseReference(name);
    assert.is(fullName(ref), full, name);
    assert.is(familiarName(ref), familiar, name);
    assert.is(archiveFileName(ref), file, name);
  }
});

test('a name without a tag, with a digest or with invalid characters is refused, saying why', () => {
  assert.throws(() => parseReference('tp/tp'), /the tag is missing/);
  assert.throws(() => parseReference('localhost:5000/tp'), /the tag is missing/);
  assert.throws(() => parseReference('tp/tp@sha256:00'), /a digest cannot name/);
  assert.throws(() => parseReference('TP/tp:1'), /"TP" is not a valid repository component/);
  assert.throws(() => parseReference('tp/tp:-1'), /"-1" is not a valid tag/);
});

test.run();
