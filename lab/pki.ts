// The lab's certificates: one CA signs the API server's serving certificate, every component's client
// certificate and the node agent's serving certificate; a second CA signs the front-proxy client
// (the aggregation layer's); a key pair signs service-account tokens. Keys come from node:crypto,
// certificates from the openssl CLI. Generated once; regenerated when the list below changes.
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCommand } from './command.js';
import { CLUSTER_DOMAIN, KUBERNETES_SERVICE_IP, NODE_IP, NODE_NAME } from './topology.js';

export interface CertificateSpec {
  /** File stem: pki/<name>.crt and pki/<name>.key. */
  name: string;
  /** The CA that signs it (file stem). */
  issuer: 'ca' | 'front-proxy-ca';
  commonName: string;
  organizations: string[];
  usage: 'client' | 'server' | 'client+server';
  dnsNames: string[];
  ipAddresses: string[];
}

const client = (name: string, commonName: string, organizations: string[] = []): CertificateSpec => ({
  name,
  issuer: 'ca',
  commonName,
  organizations,
  usage: 'client',
  dnsNames: [],
  ipAddresses: [],
});

/** Every certificate the lab issues (besides the CAs). */
export const labCertificates: CertificateSpec[] = [
  {
    name: 'apiserver',
    issuer: 'ca',
    commonName: 'kube-apiserver',
    organizations: [],
    usage: 'server',
    dnsNames: [
      'localhost',
      NODE_NAME,
      'kubernetes',
      'kubernetes.default',
      'kubernetes.default.svc',
      `kubernetes.default.svc.${CLUSTER_DOMAIN}`,
    ],
    ipAddresses: ['127.0.0.1', NODE_IP, KUBERNETES_SERVICE_IP],
  },
  client('admin', 'tp-lab-admin', ['system:masters']),
  client('controller-manager', 'system:kube-controller-manager'),
  client('scheduler', 'system:kube-scheduler'),
  client('kube-proxy', 'system:kube-proxy'),
  client('node', `system:node:${NODE_NAME}`, ['system:nodes']),
  // The API server's identity towards the kubelet API (logs, exec, port-forward).
  client('apiserver-kubelet-client', 'kube-apiserver-kubelet-client', ['system:masters']),
  {
    name: 'node-serving',
    issuer: 'ca',
    commonName: NODE_NAME,
    organizations: [],
    usage: 'server',
    dnsNames: [NODE_NAME, 'localhost'],
    ipAddresses: [NODE_IP, '127.0.0.1'],
  },
  {
    name: 'front-proxy-client',
    issuer: 'front-proxy-ca',
    commonName: 'front-proxy-client',
    organizations: [],
    usage: 'client',
    dnsNames: [],
    ipAddresses: [],
  },
];

const CAS = [
  { name: 'ca', commonName: 'tp-lab-ca' },
  { name: 'front-proxy-ca', commonName: 'tp-lab-front-proxy-ca' },
] as const;

const VALIDITY_DAYS = 3650;

/** Stamp of the certificate list: a change regenerates the whole PKI so no file is stale. */
export function pkiStamp(): string {
  return createHash('sha256')
    .update(JSON.stringify({ v: 1, CAS, labCertificates }))
    .digest('hex')
    .slice(0, 16);
}

/** openssl -subj: /O=a/O=b/CN=c (values here never contain '/'). */
export function subject(commonName: string, organizations: string[]): string {
  return `${organizations.map((o) => `/O=${o}`).join('')}/CN=${commonName}`;
}

/** The X.509 v3 extensions section for a leaf certificate. */
export function leafExtensions(spec: CertificateSpec): string {
  const eku =
    spec.usage === 'client' ? 'clientAuth' : spec.usage === 'server' ? 'serverAuth' : 'serverAuth,clientAuth';
  const lines = [
    '[v3]',
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage = ${eku}`,
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
  ];
  const sans = [...spec.dnsNames.map((d) => `DNS:${d}`), ...spec.ipAddresses.map((ip) => `IP:${ip}`)];
  if (sans.length) lines.push(`subjectAltName = ${sans.join(',')}`);
  return `${lines.join('\n')}\n`;
}

function writeKey(file: string, type: 'ec' | 'rsa'): void {
  const { privateKey } =
    type === 'ec'
      ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
      : generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
}

const serial = () => `0x${randomBytes(12).toString('hex')}`;

async function createCa(dir: string, name: string, commonName: string, tmp: string): Promise<void> {
  const key = path.join(dir, `${name}.key`);
  writeKey(key, 'ec');
  const ext = path.join(tmp, `${name}.cnf`);
  fs.writeFileSync(
    ext,
    [
      '[req]',
      'distinguished_name = dn',
      '[dn]',
      '[v3]',
      'basicConstraints = critical,CA:TRUE',
      'keyUsage = critical,digitalSignature,keyEncipherment,keyCertSign',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  await runCommand([
    'openssl',
    'req',
    '-x509',
    '-new',
    '-key',
    key,
    '-subj',
    subject(commonName, []),
    '-days',
    String(VALIDITY_DAYS),
    '-set_serial',
    serial(),
    '-config',
    ext,
    '-extensions',
    'v3',
    '-out',
    path.join(dir, `${name}.crt`),
  ]);
}

async function createLeaf(dir: string, spec: CertificateSpec, tmp: string): Promise<void> {
  const key = path.join(dir, `${spec.name}.key`);
  writeKey(key, 'ec');
  const csr = path.join(tmp, `${spec.name}.csr`);
  const ext = path.join(tmp, `${spec.name}.cnf`);
  fs.writeFileSync(ext, leafExtensions(spec));
  await runCommand([
    'openssl',
    'req',
    '-new',
    '-key',
    key,
    '-subj',
    subject(spec.commonName, spec.organizations),
    '-out',
    csr,
  ]);
  await runCommand([
    'openssl',
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    path.join(dir, `${spec.issuer}.crt`),
    '-CAkey',
    path.join(dir, `${spec.issuer}.key`),
    '-set_serial',
    serial(),
    '-days',
    String(VALIDITY_DAYS),
    '-extfile',
    ext,
    '-extensions',
    'v3',
    '-out',
    path.join(dir, `${spec.name}.crt`),
  ]);
}

/** Creates pki/ unless it is complete and current. Returns true when it generated new material. */
export async function ensurePki(dir: string): Promise<boolean> {
  const stampFile = path.join(dir, 'STAMP');
  const stamp = pkiStamp();
  const expected = [
    ...CAS.flatMap((c) => [`${c.name}.crt`, `${c.name}.key`]),
    ...labCertificates.flatMap((c) => [`${c.name}.crt`, `${c.name}.key`]),
    'sa.key',
    'sa.pub',
  ];
  const current =
    fs.existsSync(stampFile) &&
    fs.readFileSync(stampFile, 'utf8').trim() === stamp &&
    expected.every((f) => fs.existsSync(path.join(dir, f)));
  if (current) return false;

  // Build into a sibling directory and swap it in, so an interrupted run never leaves a mixed PKI.
  const building = `${dir}.new`;
  fs.rmSync(building, { recursive: true, force: true });
  fs.mkdirSync(building, { recursive: true, mode: 0o700 });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-lab-pki-'));
  try {
    for (const ca of CAS) await createCa(building, ca.name, ca.commonName, tmp);
    for (const spec of labCertificates) await createLeaf(building, spec, tmp);
    const sa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(path.join(building, 'sa.key'), sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), {
      mode: 0o600,
    });
    fs.writeFileSync(path.join(building, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }));
    fs.writeFileSync(path.join(building, 'STAMP'), `${stamp}\n`);
  } catch (err) {
    fs.rmSync(building, { recursive: true, force: true });
    throw err;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(building, dir);
  return true;
}

export interface KeyPairFiles {
  cert: string;
  key: string;
}

export function pkiFiles(dir: string, name: string): KeyPairFiles {
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}
