// Kubernetes users for the scenarios, made the way an admin makes a certificate user: an openssl key and
// CSR, a CertificateSigningRequest for kubernetes.io/kube-apiserver-client, `kubectl certificate approve`,
// and a kubeconfig with the issued certificate (one for the host's kubectl, one for the workstation).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, stringify } from 'yaml';
import { labPaths } from '../../lab/paths.js';
import type { Cluster } from './cluster.js';
import { apply, kubectl, waitFor } from './kube.js';

export interface CertificateUser {
  name: string;
  /** For kubectl on the host. */
  kubeconfig: string;
  /** For tp on the workstation (the lab's workstation namespace reaches the API server elsewhere). */
  workstationKubeconfig: string;
}

interface KubeconfigFile {
  clusters: { name: string; cluster: { server: string; 'certificate-authority-data'?: string } }[];
  contexts: { name: string; context: { cluster: string } }[];
  'current-context': string;
}

function withUser(base: string, user: string, cert: string, key: string): string {
  const k = parse(fs.readFileSync(base, 'utf8')) as KubeconfigFile;
  const ctx = k.contexts.find((x) => x.name === k['current-context'])!;
  const cluster = k.clusters.find((x) => x.name === ctx.context.cluster)!;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'cluster', cluster: cluster.cluster }],
    users: [
      {
        name: user,
        user: {
          'client-certificate-data': Buffer.from(cert).toString('base64'),
          'client-key-data': Buffer.from(key).toString('base64'),
        },
      },
    ],
    contexts: [{ name: user, context: { cluster: 'cluster', user, namespace: 'default' } }],
    'current-context': user,
  });
}

/** Mints a certificate user `name` (CN) signed by the cluster's CA; its files go to dir. */
export async function certificateUser(c: Cluster, name: string, dir: string): Promise<CertificateUser> {
  fs.mkdirSync(dir, { recursive: true });
  const keyFile = path.join(dir, `${name}.key`);
  const csrFile = path.join(dir, `${name}.csr`);
  execFileSync(
    'openssl',
    [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      csrFile,
      '-subj',
      `/CN=${name}/O=tp-e2e`,
    ],
    { stdio: 'pipe' },
  );
  await kubectl(c, ['delete', 'csr', name, '--ignore-not-found']);
  await apply(c, [
    {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { name },
      spec: {
        request: fs.readFileSync(csrFile).toString('base64'),
        signerName: 'kubernetes.io/kube-apiserver-client',
        expirationSeconds: 3600,
        usages: ['client auth'],
      },
    },
  ]);
  await kubectl(c, ['certificate', 'approve', name]);
  const cert = await waitFor(`the certificate of user ${name}`, async () => {
    const r = await kubectl(c, ['get', 'csr', name, '-o', 'jsonpath={.status.certificate}']);
    return r.stdout.trim() ? Buffer.from(r.stdout.trim(), 'base64').toString() : '';
  });
  const key = fs.readFileSync(keyFile, 'utf8');
  const kubeconfig = path.join(dir, `${name}.kubeconfig`);
  const workstationKubeconfig = path.join(dir, `${name}.ws.kubeconfig`);
  fs.writeFileSync(kubeconfig, withUser(c.kubeconfig, name, cert, key), { mode: 0o600 });
  const wsBase = c.kind === 'lab' ? labPaths().kubeconfigWorkstation : c.kubeconfig;
  fs.writeFileSync(workstationKubeconfig, withUser(wsBase, name, cert, key), { mode: 0o600 });
  return { name, kubeconfig, workstationKubeconfig };
}

/** Removes the users' CertificateSigningRequests (their files go with the test's directory). */
export async function removeCertificateUsers(c: Cluster, names: string[]): Promise<void> {
  await kubectl(c, ['delete', 'csr', ...names, '--ignore-not-found'], { check: false });
}
