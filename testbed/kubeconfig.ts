// A KubeConfig for a stand-in API server on loopback (plain HTTP, no credentials): for tests of code that
// takes a KubeConfig, against a server the test runs itself.
import { KubeConfig } from '@kubernetes/client-node';

export function loopbackKubeConfig(port: number): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return kc;
}
