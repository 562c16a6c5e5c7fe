// The lab's acceptance scenarios (issue 4), run as a new user would, with the real kubectl against
// the real API server: nodes, a Deployment behind a Service, a client pod, exec, logs, pod
// replacement, port-forward from the workstation. Against a kind cluster they run unchanged.
import * as assert from 'uvu/assert';
import { runCommand } from '../../lab/command.js';
import { tpLabMain } from './cluster.js';
import {
  apply,
  execInPod,
  freshNamespace,
  kubectl,
  kubectlJson,
  listPods,
  onWorkstation,
  type PodSummary,
  rolloutStatus,
  startClientPod,
  startOnWorkstation,
  waitFor,
  waitForEndpoints,
} from './kube.js';
import { clusterSuite } from './suite.js';
import { echoDeployment, echoService } from './workloads.js';

const NS = 'tp-e2e-lab';
const { test, cluster } = await clusterSuite('lab acceptance');

if (cluster) {
  const c = cluster;
  const readyEchoPods = async (): Promise<PodSummary[]> =>
    (await listPods(c, NS, 'app=echo')).filter((p) => p.ready && p.phase === 'Running' && !p.deleting);
  /** curl from the client pod; returns the body. */
  const curlFromClient = async (url: string) =>
    (await execInPod(c, NS, 'client', ['curl', '-s', '--max-time', '5', url])).stdout.trim();
  /**
   * The first answer through a new Service: the proxy rules follow the endpoints by a moment (on
   * any cluster), so retry until it answers rather than race kube-proxy.
   */
  const firstAnswer = (url: string) =>
    waitFor(`an answer from ${url}`, async () => curlFromClient(url), 60_000, 1_000);

  test.before(async () => {
    await freshNamespace(c, NS);
  });

  test.after(async () => {
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
  });

  test('kubectl get nodes: one node, Ready', async () => {
    const nodes = await kubectlJson<{
      items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[];
    }>(c, ['get', 'nodes']);
    if (c.kind === 'lab') assert.is(nodes.items.length, 1, 'the lab has one node');
    for (const n of nodes.items) {
      const ready = n.status.conditions.find((x) => x.type === 'Ready');
      assert.is(ready?.status, 'True', `node ${n.metadata.name} is Ready`);
    }
  });

  test('kubectl apply + rollout status: 2 echo replicas Running with distinct IPs', async () => {
    await apply(c, [echoDeployment(c), echoService()], NS);
    await rolloutStatus(c, NS, 'echo');
    const pods = await waitFor('2 ready echo pods', async () => {
      const ready = await readyEchoPods();
      return ready.length === 2 ? ready : null;
    });
    assert.ok(pods[0]!.ip && pods[1]!.ip, 'both pods have an IP');
    assert.is.not(pods[0]!.ip, pods[1]!.ip, 'the pods have distinct IPs');
  });

  test('kubectl run client --image=lab/shell:1: the client pod runs', async () => {
    await startClientPod(c, NS);
  });

  test('kubectl exec client -- curl: by name and by ClusterIP, both replicas answer', async () => {
    const names = new Set((await readyEchoPods()).map((p) => p.name));
    await waitForEndpoints(c, NS, 'echo', 2);
    const byName = await firstAnswer(`http://echo.${NS}.svc.cluster.local/`);
    assert.ok(
      names.has(byName),
      `the Service answered by name with a pod name, got ${JSON.stringify(byName)}`,
    );

    const svc = await kubectlJson<{ spec: { clusterIP: string } }>(c, ['get', 'service', 'echo', '-n', NS]);
    const seen = new Set<string>();
    // kube-proxy picks endpoints at random: a few dozen requests reach both with near certainty.
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const body = await curlFromClient(`http://${svc.spec.clusterIP}/`);
      assert.ok(names.has(body), `the ClusterIP answered with a pod name, got ${JSON.stringify(body)}`);
      seen.add(body);
    }
    assert.is(seen.size, 2, 'both replicas were reached through the ClusterIP');
  });

  test("kubectl logs: an echo pod's output", async () => {
    const [pod] = await readyEchoPods();
    const logs = await kubectl(c, ['logs', '-n', NS, pod!.name]);
    assert.ok(logs.stdout.trim().length > 0, 'the echo server wrote something to its log');
  });

  test('kubectl delete pod: a replacement is created and becomes Ready', async () => {
    const before = await readyEchoPods();
    const victim = before[0]!.name;
    await kubectl(c, ['delete', 'pod', '-n', NS, victim, '--wait=false']);
    const after = await waitFor('a Ready replacement pod', async () => {
      const ready = await readyEchoPods();
      return ready.length === 2 && !ready.some((p) => p.name === victim) ? ready : null;
    });
    assert.ok(
      after.some((p) => !before.some((b) => b.name === p.name)),
      'a new pod name',
    );
    await waitFor(`pod ${victim} to be gone`, async () => {
      const r = await kubectl(c, ['get', 'pod', '-n', NS, victim], { check: false });
      return r.code !== 0;
    });
  });

  test('port-forward svc/echo from the workstation: curl 127.0.0.1:19000 answers', async () => {
    const names = new Set((await readyEchoPods()).map((p) => p.name));
    const pf = startOnWorkstation(c, ['kubectl', 'port-forward', '-n', NS, 'svc/echo', '19000:80']);
    try {
      await pf.waitForOutput(/Forwarding from 127\.0\.0\.1:19000/);
      for (let i = 0; i < 3; i++) {
        const r = await onWorkstation(c, ['curl', '-s', '--max-time', '10', 'http://127.0.0.1:19000/'], {
          check: false,
        });
        assert.ok(
          r.code === 0 && names.has(r.stdout.trim()),
          `curl through the port-forward: exit ${r.code}, got ${JSON.stringify(r.stdout)}; kubectl port-forward said: ${pf.output()}`,
        );
      }
    } finally {
      await pf.stop();
    }
  });

  if (c.kind === 'lab') {
    test('tp-lab up on a running lab is harmless; status says running; env names the kubeconfig', async () => {
      const up = await runCommand([process.execPath, tpLabMain, 'up']);
      assert.match(up.stderr, /already running/);
      assert.is(up.stdout.trim(), c.kubeconfig);
      const status = JSON.parse(
        (await runCommand([process.execPath, tpLabMain, 'status', '-o', 'json'])).stdout,
      );
      assert.is(status.state, 'running');
      assert.ok(status.components.every((x: { running: boolean }) => x.running));
      const env = (await runCommand([process.execPath, tpLabMain, 'env'])).stdout;
      assert.ok(env.includes(`export KUBECONFIG=${c.kubeconfig}`));
      assert.match(env, /^export PATH=.*tp-lab.*:"\$PATH"$/m);
    });

    test('the workstation reaches the API server but not the pod or service networks', async () => {
      const readyz = await onWorkstation(c, ['kubectl', 'get', '--raw', '/readyz']);
      assert.is(readyz.stdout.trim(), 'ok');
      const svc = await kubectlJson<{ spec: { clusterIP: string } }>(c, ['get', 'service', 'echo', '-n', NS]);
      const [pod] = await readyEchoPods();
      for (const url of [`http://${svc.spec.clusterIP}/`, `http://${pod!.ip}:8080/`]) {
        const r = await onWorkstation(c, ['curl', '-s', '--max-time', '3', url], { check: false });
        assert.is.not(r.code, 0, `${url} must be unreachable from the workstation`);
      }
    });
  }
}

test.run();
