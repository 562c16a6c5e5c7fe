// What `tp-lab restart` and `up` on a degraded lab rely on: the components a name restarts, which
// Services kube-proxy has programmed (read from its rules), and configuration written only on change
// (kube-proxy exits when its configuration file is touched).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../../netaddr/parse.js';
import { isGcRace } from '../node-runtime.js';
import { writeIfChanged } from '../paths.js';
import { programmedServices } from '../readiness.js';
import { componentsToRestart } from '../restart.js';

test('image import: containerd’s garbage-collection race is retried, any other failure is not', () => {
  const race = new Error(
    '`ctr images import /x/tp.tar` failed (exit 1):\n  ctr: failed to prepare extraction snapshot "extract-1 sha256:aa": parent snapshot sha256:bb does not exist: not found',
  );
  assert.ok(isGcRace(race));
  assert.not.ok(
    isGcRace(
      new Error(
        '`ctr images import /x/tp.tar` failed (exit 1):\n  ctr: open /x/tp.tar: no such file or directory',
      ),
    ),
  );
  assert.not.ok(isGcRace(undefined));
});

test('restart: a component by name, node = kubelet and containerd, anything else names the choices', () => {
  assert.equal(componentsToRestart('kube-apiserver'), ['kube-apiserver']);
  assert.equal(componentsToRestart('node'), ['kubelet', 'containerd']);
  try {
    componentsToRestart('apiserver');
    assert.unreachable('an unknown component must be refused');
  } catch (err) {
    assert.instance(err, UsageError);
    assert.match(
      (err as Error).message,
      /no lab component "apiserver": restart one of .*kube-apiserver.*node/,
    );
  }
});

test("kube-proxy's programmed Services from iptables-save -t nat", () => {
  const rules = [
    '*nat',
    ':KUBE-SERVICES - [0:0]',
    '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y',
    '-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU',
    '-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-ERIFXISQEP7F7OF4',
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    '-A KUBE-SVC-NPX46M4PTMTKRN6Y -d 10.96.0.99/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ',
    'COMMIT',
  ].join('\n');
  assert.equal([...programmedServices(rules)].sort(), ['10.96.0.10:53', '10.96.0.1:443']);
});

test('writeIfChanged: writes new or changed content, leaves an identical file untouched', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-lab-write-'));
  try {
    const file = path.join(dir, 'kube-proxy.yaml');
    assert.ok(writeIfChanged(file, 'a: 1\n'));
    const before = fs.statSync(file).mtimeMs;
    assert.not.ok(writeIfChanged(file, 'a: 1\n'), 'the same content is not written again');
    assert.is(fs.statSync(file).mtimeMs, before);
    assert.ok(writeIfChanged(file, 'a: 2\n', 0o600));
    assert.is(fs.readFileSync(file, 'utf8'), 'a: 2\n');
    assert.is(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.readdirSync(dir), ['kube-proxy.yaml'], 'no temporary file left');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
