// Issue 7 on a real cluster: a workload selects the eBPF capture mechanism with its own pod-template
// annotation (tp.dev/mechanism: ebpf), `tp intercept` keeps that choice, a cluster pod's request to the
// Service reaches the workstation's app, and with no intercept the connection goes straight to the app.
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import { MECHANISM_ANNOTATION } from '../../kube/annotations.js';
import { type BpffsMount, ensureBpffs } from '../../testbed/bpffs.js';
import {
  apply,
  type Background,
  execInPod,
  freshNamespace,
  kubectl,
  kubectlJson,
  MANAGER_NS,
  rolloutStatus,
  startClientPod,
  startOnWorkstation,
  tpOnWorkstation,
  waitFor,
  waitForEndpoints,
} from './kube.js';
import { afterSetup, clusterSuite } from './suite.js';
import { ECHO_PORT, echoDeployment, echoService } from './workloads.js';

const NS = 'tp-e2e-ebpf';
const LOCAL_PORT = 18091;

const { test, cluster } = await clusterSuite('kubernetes intercept with eBPF capture');

const laptopApp = `
require('node:http').createServer((req, res) => res.end('laptop'))
  .listen(${LOCAL_PORT}, '127.0.0.1', () => console.log('laptop app listening'));
`;

/** echo with the pod-template annotation that selects eBPF capture for this workload only. */
function ebpfEchoDeployment(c: NonNullable<typeof cluster>): object {
  const d = echoDeployment(c, 'echo', 1) as {
    spec: { template: { metadata: { annotations?: Record<string, string> } } };
  };
  d.spec.template.metadata.annotations = { [MECHANISM_ANNOTATION]: 'ebpf' };
  return d;
}

if (cluster) {
  const c = cluster;
  const runDir = '/tmp/tpk-e2e-ebpf';
  const tp = tpOnWorkstation(c, runDir);
  let laptop: Background | undefined;
  let bpffs: BpffsMount | undefined;
  let installedHere = false;

  const serviceUrl = `http://echo.${NS}.svc.cluster.local`;
  const curlFromClient = async () => {
    const r = await execInPod(c, NS, 'client', ['curl', '-sS', '--max-time', '10', serviceUrl], {
      check: false,
    });
    return r.code === 0 ? r.stdout.trim() : `curl failed (exit ${r.code}): ${r.stderr.trim()}`;
  };
  const answersFromCluster = (body: string) => body.startsWith('echo-');
  interface PodJson {
    metadata: { name: string; deletionTimestamp?: string; annotations?: Record<string, string> };
    spec: { containers: { name: string }[]; initContainers?: { name: string }[] };
  }
  const echoPods = async () =>
    (await kubectlJson<{ items: PodJson[] }>(c, ['get', 'pods', '-n', NS, '-l', 'app=echo'])).items.filter(
      (p) => !p.metadata.deletionTimestamp,
    );
  const injected = (p: PodJson) => p.spec.containers.some((x) => x.name === 'tp-agent');

  const scenario = afterSetup(test, async () => {
    // A kubelet node has bpffs at /sys/fs/bpf (systemd mounts it); the lab's host may not.
    if (c.kind === 'lab') bpffs = ensureBpffs();
    await freshNamespace(c, NS);
    await apply(c, [ebpfEchoDeployment(c), echoService()], NS);
    await startClientPod(c, NS);
    await rolloutStatus(c, NS, 'echo');
    // The chart: reuse a release another file left installed, else install it (and remove it after).
    const hooks = await kubectl(
      c,
      ['get', 'mutatingwebhookconfiguration', `tp-agent-injector-${MANAGER_NS}`],
      { check: false },
    );
    if (hooks.code !== 0) {
      await tp(['helm', 'install', '--set', 'logLevel=debug'], { timeoutMs: 360_000 });
      installedHere = true;
    }
    await rolloutStatus(c, MANAGER_NS, 'traffic-manager');
    laptop = startOnWorkstation(c, [process.execPath, '-e', laptopApp]);
    await laptop.waitForOutput(/laptop app listening/);
    await tp(['connect']);
  });

  test.after(async () => {
    await tp(['leave', 'echo'], { check: false }).catch(() => {});
    await tp(['quit'], { check: false }).catch(() => {});
    await laptop?.stop();
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=true', '--timeout=120s'], {
      check: false,
      timeoutMs: 150_000,
    }).catch(() => {});
    if (installedHere) await tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    fs.rmSync(runDir, { recursive: true, force: true });
    bpffs?.release();
  });

  scenario('tp intercept keeps the workload\'s eBPF choice: the client pod gets "laptop"', async () => {
    const r = await tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:${ECHO_PORT}`]);
    assert.match(r.stdout, /Intercepting/);
    const pods = await waitFor('an injected echo pod', async () => {
      const p = await echoPods();
      return p.length === 1 && p.every(injected) ? p : null;
    });
    assert.is(pods[0]!.metadata.annotations?.[MECHANISM_ANNOTATION], 'ebpf');
    const tpl = await kubectlJson<{
      spec: { template: { metadata: { annotations: Record<string, string> } } };
    }>(c, ['get', 'deployment', 'echo', '-n', NS]);
    assert.is(
      tpl.spec.template.metadata.annotations[MECHANISM_ANNOTATION],
      'ebpf',
      'the template keeps ebpf',
    );
    // The Service must point at the injected pod only (the replaced pod's endpoint and kube-proxy's rules
    // for it go away a moment after the rollout), then every request is intercepted.
    const podIp = (pods[0] as { status?: { podIP?: string } }).status?.podIP;
    await waitForEndpoints(c, NS, 'echo', 1, [podIp!]);
    let inARow = 0;
    await waitFor(
      'the Service to answer "laptop" three times in a row',
      async () => {
        inARow = (await curlFromClient()) === 'laptop' ? inARow + 1 : 0;
        return inARow >= 3;
      },
      90_000,
    );
    for (let i = 0; i < 5; i++) assert.is(await curlFromClient(), 'laptop', `request ${i + 1}`);
  });

  scenario('tp describe and tp list -o json show mechanism ebpf', async () => {
    const d = await tp(['describe', 'echo', '-n', NS]);
    assert.match(d.stdout, /mechanism:\s+ebpf/);
    assert.match(d.stdout, /tp-init:.*--mechanism ebpf/, 'tp-init was asked for ebpf');
    // tp-init's log as describe shows it: the program attached to the pod's namespace, no fallback.
    assert.match(d.stdout, /eBPF capture: attached tp_steer .* to network namespace \d+/);
    assert.match(d.stdout, /eBPF capture: captured ports 8080/);
    assert.not.match(d.stdout, /not available/i, 'tp-init did not fall back to iptables');
    assert.not.match(d.stdout, /REDIRECT/, 'no iptables rules in an eBPF pod');
    const list = JSON.parse((await tp(['list', '-n', NS, '-o', 'json'])).stdout) as {
      workloads: { name: string; mechanism?: string }[];
    };
    const echo = list.workloads.find((w) => w.name === 'echo');
    assert.ok(echo, 'echo is listed');
    assert.is(echo!.mechanism, 'ebpf');
  });

  scenario('tp leave: with no intercept the connection goes straight to the app', async () => {
    await tp(['leave', 'echo']);
    await waitFor('the echo pod to answer', async () => answersFromCluster(await curlFromClient()), 60_000);
    for (let i = 0; i < 5; i++) assert.ok(answersFromCluster(await curlFromClient()), `request ${i + 1}`);
    // The agent stays in the pod, but nothing is steered to it: the app sees the client pod as its peer.
    assert.ok((await echoPods()).every(injected));
    const clientIp = (await kubectlJson<{ status: { podIP: string } }>(c, ['get', 'pod', 'client', '-n', NS]))
      .status.podIP;
    // Probes (the agent checks the app on loopback for the kubelet) interleave with the requests in the
    // log: look at the requests from the client pod, which must arrive with its own address.
    const logs = await kubectl(c, ['logs', '-n', NS, 'deploy/echo', '-c', 'echo', '--tail=40']);
    const fromClient = new RegExp(`from (::ffff:)?${clientIp.replace(/\./g, '\\.')}$`);
    const lines = logs.stdout.trim().split('\n');
    // The five requests just made (and the wait before them) all reached the app from the client's address.
    assert.ok(
      lines.filter((l) => fromClient.test(l)).length >= 5,
      `the app saw the client pod ${clientIp} as the peer:\n${lines.join('\n')}`,
    );
  });

  scenario("tp uninstall --agent echo: the agent goes, the owner's tp.dev/mechanism stays", async () => {
    await tp(['uninstall', '--agent', 'echo', '-n', NS]);
    await waitFor('an echo pod without the agent', async () => {
      const p = await echoPods();
      return p.length === 1 && !p.some(injected);
    });
    const tpl = await kubectlJson<{
      spec: { template: { metadata: { annotations?: Record<string, string> } } };
    }>(c, ['get', 'deployment', 'echo', '-n', NS]);
    const annotations = tpl.spec.template.metadata.annotations ?? {};
    assert.is(annotations[MECHANISM_ANNOTATION], 'ebpf', "the owner's choice is kept");
    assert.equal(
      Object.keys(annotations).filter((k) => k.startsWith('tp.dev/') && k !== 'tp.dev/restartedAt'),
      [MECHANISM_ANNOTATION],
      "tp's own annotations are gone",
    );
    await waitFor('the echo pod to answer', async () => answersFromCluster(await curlFromClient()), 60_000);
  });
}

test.run();
