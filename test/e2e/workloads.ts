// The workloads of the e2e scenarios, as objects (rendered to YAML for kubectl apply).
import type { Cluster } from './cluster.js';

export const ECHO_PORT = 8080;

/** A Deployment of `replicas` echo servers; each answers its pod name on $PORT. */
export function echoDeployment(c: Cluster, name = 'echo', replicas = 2): object {
  const labels = { app: name };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels },
    spec: {
      replicas,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          terminationGracePeriodSeconds: 5,
          containers: [
            {
              name: 'echo',
              image: c.images.echo,
              env: [{ name: 'PORT', value: String(ECHO_PORT) }],
              ports: [{ name: 'http', containerPort: ECHO_PORT }],
              readinessProbe: { httpGet: { path: '/', port: ECHO_PORT }, periodSeconds: 2 },
            },
          ],
        },
      },
    },
  };
}

/** A ClusterIP Service on port 80 with a numeric targetPort. */
export function echoService(name = 'echo'): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: { selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort: ECHO_PORT }] },
  };
}
