// The lab's PKI, generated for real with openssl: every certificate chains to its CA, the API server's
// names cover every way it is reached, identities carry the groups RBAC and the Node authorizer use.
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ensurePki, labCertificates, leafExtensions, subject } from '../pki.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-lab-pki-test-'));
const pki = path.join(dir, 'pki');
const cert = (name: string) => new X509Certificate(fs.readFileSync(path.join(pki, `${name}.crt`)));

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('subject and extensions render as openssl expects', () => {
  assert.is(subject('system:node:tplab-node', ['system:nodes']), '/O=system:nodes/CN=system:node:tplab-node');
  const ext = leafExtensions(labCertificates.find((c) => c.name === 'apiserver')!);
  assert.match(ext, /extendedKeyUsage = serverAuth\n/);
  assert.match(ext, /IP:10\.96\.0\.1/);
});

test('ensurePki generates everything once, then leaves it alone', async () => {
  assert.is(await ensurePki(pki), true);
  const before = fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8');
  assert.is(await ensurePki(pki), false);
  assert.is(fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8'), before);
  assert.is(fs.statSync(path.join(pki, 'ca.key')).mode & 0o777, 0o600);
});

test('every certificate is signed by its CA', () => {
  const ca = cert('ca');
  const frontProxyCa = cert('front-proxy-ca');
  assert.ok(ca.ca);
  for (const spec of labCertificates) {
    const issuer = spec.issuer === 'ca' ? ca : frontProxyCa;
    assert.ok(cert(spec.name).verify(issuer.publicKey), `${spec.name} verifies against ${spec.issuer}`);
    assert.ok(cert(spec.name).checkIssued(issuer), `${spec.name} issued by ${spec.issuer}`);
  }
});

test('the API server certificate names 127.0.0.1, the node IP, the kubernetes Service IP and DNS names', () => {
  const apiserver = cert('apiserver');
  for (const ip of ['127.0.0.1', '172.30.0.1', '10.96.0.1']) assert.ok(apiserver.checkIP(ip), ip);
  for (const host of ['kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'localhost']) {
    assert.ok(apiserver.checkHost(host), host);
  }
  const serving = cert('node-serving');
  assert.ok(serving.checkIP('172.30.0.1'), 'the kubelet API certificate names the node IP');
});

test('identities: node in system:nodes, admin in system:masters', () => {
  assert.match(cert('node').subject, /O=system:nodes/);
  assert.match(cert('node').subject, /CN=system:node:tplab-node/);
  assert.match(cert('admin').subject, /O=system:masters/);
  assert.match(cert('kube-proxy').subject, /CN=system:kube-proxy/);
});

test('a service-account key pair that matches', () => {
  const key = fs.readFileSync(path.join(pki, 'sa.key'), 'utf8');
  const pub = fs.readFileSync(path.join(pki, 'sa.pub'), 'utf8');
  assert.match(key, /BEGIN PRIVATE KEY/);
  assert.match(pub, /BEGIN PUBLIC KEY/);
});

test('a missing file regenerates the whole PKI (no mixed CA)', async () => {
  const oldCa = fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8');
  fs.rmSync(path.join(pki, 'scheduler.key'));
  assert.is(await ensurePki(pki), true);
  assert.is.not(fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8'), oldCa);
  assert.ok(cert('scheduler').verify(cert('ca').publicKey));
});

test.run();
