// Kubeconfigs for the host, the workstation namespace, the node agent and each control-plane
// component. Certificates are embedded so a kubeconfig keeps working when copied elsewhere.
import { stringify } from 'yaml';

export interface KubeconfigInput {
  server: string;
  caPem: string;
  clientCertPem: string;
  clientKeyPem: string;
  /** The user and context name. */
  user: string;
  clusterName?: string;
}

const b64 = (pem: string) => Buffer.from(pem).toString('base64');

export function renderKubeconfig(input: KubeconfigInput): string {
  const cluster = input.clusterName ?? 'tp-lab';
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      { name: cluster, cluster: { server: input.server, 'certificate-authority-data': b64(input.caPem) } },
    ],
    users: [
      {
        name: input.user,
        user: {
          'client-certificate-data': b64(input.clientCertPem),
          'client-key-data': b64(input.clientKeyPem),
        },
      },
    ],
    contexts: [{ name: cluster, context: { cluster, user: input.user, namespace: 'default' } }],
    'current-context': cluster,
    preferences: {},
  });
}
