// Issue 5 acceptance: a whole intercept on a real cluster, as a developer and an admin would do it.
// The chart is installed with `tp helm install`; the workstation (tplab-ws on the lab) runs tp with no
// flag but its kubeconfig, reaching the manager through a port-forward via the API server; an app on
// the workstation answers "laptop"; a client pod in the cluster calls the echo Service.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import {
  apply,
  type Background,
  deleteManagerPods,
  execInPod,
  freshNamespace,
  kubectl,
  kubectlJson,
  listPods,
  MANAGER_NS,
  onWorkstation,
  rolloutStatus,
  startClientPod,
  startOnWorkstation,
  type TpRunner,
  tpArgv,
  tpOnWorkstation,
  waitFor,
  waitForEndpoints,
  waitForWebhook,
} from './kube.js';
import { afterSetup, clusterSuite } from './suite.js';
import {
  checkSequential,
  ECHO_PORT,
  echoDeployment,
  echoService,
  patternHash,
  sendPatternSource,
  sequentialClientSource,
} from './workloads.js';

const NS = 'tp-e2e-intercept';
const LOCAL_PORT = 18090;
const MiB = 1024 * 1024;

const { test, cluster } = await clusterSuite('kubernetes intercept');

/**
 * The workstation's app: GET / answers "laptop"; GET /bytes?n=N streams N bytes of a fixed pattern;
 * POST /sink answers the sha256 of what it received.
 */
const laptopApp = `
const http = require('node:http');
const crypto = require('node:crypto');
${sendPatternSource}
http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/bytes') return sendPattern(res, Number(url.searchParams.get('n')));
  if (url.pathname === '/sink') {
    const h = crypto.createHash('sha256');
    req.on('data', (d) => h.update(d));
    req.on('end', () => res.end(h.digest('hex')));
    return;
  }
  res.end('laptop');
}).listen(${LOCAL_PORT}, '127.0.0.1', () => console.log('laptop app listening'));
`;

interface Workstation {
  runDir: string;
  tp: TpRunner;
}

if (cluster) {
  const c = cluster;
  const workstation = (name: string): Workstation => {
    const runDir = `/tmp/tpk-e2e-${name}`;
    return { runDir, tp: tpOnWorkstation(c, runDir) };
  };
  const alice = workstation('alice');
  const bob = workstation('bob');
  let laptop: Background | undefined;

  const serviceUrl = `http://echo.${NS}.svc.cluster.local`;
  /** The body, or what went wrong (curl's exit code and message) so a failed assertion says why. */
  const curlFromClient = async (urlPath = '/') => {
    const r = await execInPod(
      c,
      NS,
      'client',
      ['curl', '-sS', '--max-time', '10', `${serviceUrl}${urlPath}`],
      {
        check: false,
      },
    );
    return r.code === 0 ? r.stdout.trim() : `curl failed (exit ${r.code}): ${r.stderr.trim()}`;
  };
  const answersFromCluster = (body: string) => body.startsWith('echo-');
  const echoPods = async () => (await listPods(c, NS, 'app=echo')).filter((p) => !p.deleting);
  interface PodJson {
    metadata: { name: string };
    spec: { containers: { name: string; ports?: unknown[] }[]; initContainers?: { name: string }[] };
  }
  const podSpecs = async () =>
    (
      await kubectlJson<{ items: (PodJson & { metadata: { deletionTimestamp?: string } })[] }>(c, [
        'get',
        'pods',
        '-n',
        NS,
        '-l',
        'app=echo',
      ])
    ).items.filter((p) => !p.metadata.deletionTimestamp);
  const injected = (p: PodJson) =>
    p.spec.containers.some((x) => x.name === 'tp-agent') &&
    (p.spec.initContainers ?? []).some((x) => x.name === 'tp-init');
  const interceptOf = async (w: Workstation, name: string) => {
    const st = JSON.parse((await w.tp(['status', '-o', 'json'])).stdout) as {
      intercepts?: {
        name: string;
        disposition: string;
        message?: string;
        pods: { disposition: string; message?: string }[];
      }[];
    };
    return st.intercepts?.find((i) => i.name === name);
  };
  let servicesBefore = '';
  let containersBefore = '';
  const snapshotApp = async () => {
    const svc = await kubectlJson<{ spec: object }>(c, ['get', 'service', 'echo', '-n', NS]);
    const deploy = await kubectlJson<{ spec: { template: { spec: { containers: unknown[] } } } }>(c, [
      'get',
      'deployment',
      'echo',
      '-n',
      NS,
    ]);
    return {
      service: JSON.stringify(svc.spec),
      containers: JSON.stringify(deploy.spec.template.spec.containers),
    };
  };

  // uvu reports nothing when a before hook throws (0 of N run, exit 0): each scenario fails with the error.
  const scenario = afterSetup(test, async () => {
    await freshNamespace(c, NS);
    await apply(c, [echoDeployment(c), echoService()], NS);
    await startClientPod(c, NS);
    await rolloutStatus(c, NS, 'echo');
    ({ service: servicesBefore, containers: containersBefore } = await snapshotApp());
    laptop = startOnWorkstation(c, [process.execPath, '-e', laptopApp]);
    await laptop.waitForOutput(/laptop app listening/);
  });

  test.after(async () => {
    for (const w of [alice, bob]) await w.tp(['quit'], { check: false }).catch(() => {});
    await laptop?.stop();
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
    // The chart may already be gone (the last scenario uninstalls it).
    await alice.tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    for (const w of [alice, bob]) fs.rmSync(w.runDir, { recursive: true, force: true });
  });

  scenario('tp helm install: the manager runs, the webhook is registered', async () => {
    const r = await alice.tp(
      ['helm', 'install', '--set', 'timeouts.clientSession=10s', '--set', 'logLevel=debug'],
      {
        check: false,
        timeoutMs: 360_000,
      },
    );
    if (r.code !== 0 && /already installed/.test(r.stderr)) {
      await alice.tp(['helm', 'upgrade', '--set', 'timeouts.clientSession=10s', '--set', 'logLevel=debug'], {
        timeoutMs: 360_000,
      });
    } else assert.is(r.code, 0, r.stderr);
    await rolloutStatus(c, MANAGER_NS, 'traffic-manager');
    const hooks = await kubectl(c, [
      'get',
      'mutatingwebhookconfiguration',
      `tp-agent-injector-${MANAGER_NS}`,
    ]);
    assert.match(hooks.stdout, 'tp-agent-injector');
  });

  scenario(
    'tp connect with nothing but the kubeconfig reaches the manager through the API server',
    async () => {
      const r = await alice.tp(['connect']);
      assert.match(r.stdout, /Connected to the traffic manager/);
      const st = JSON.parse((await alice.tp(['status', '-o', 'json'])).stdout) as { state: string };
      assert.is(st.state, 'CONNECTED');
    },
  );

  scenario('failures: an unknown workload, a port the workload does not expose', async () => {
    const unknown = await alice.tp(['intercept', 'nope', '-n', NS, '--port', `${LOCAL_PORT}:8080`], {
      check: false,
    });
    assert.is.not(unknown.code, 0);
    assert.match(unknown.stderr, /no Deployment, ReplicaSet or StatefulSet named "nope"/);
    const port = await alice.tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:9999`], {
      check: false,
    });
    assert.is.not(port.code, 0);
    assert.match(port.stderr, /9999/);
    assert.match(port.stderr, /8080/, 'the error names the ports the workload does expose');
    // Nothing was rolled for a refused intercept.
    assert.ok((await podSpecs()).every((p) => !injected(p)));
  });

  scenario(
    'the webhook unreachable: a clear error, and the pods run unchanged instead of broken',
    async () => {
      const svc = await kubectlJson<{ spec: { selector: Record<string, string> } }>(c, [
        'get',
        'service',
        'traffic-manager-webhook',
        '-n',
        MANAGER_NS,
      ]);
      const patchSelector = (selector: Record<string, string | null>) =>
        kubectl(c, [
          'patch',
          'service',
          'traffic-manager-webhook',
          '-n',
          MANAGER_NS,
          '--type=merge',
          '-p',
          JSON.stringify({ spec: { selector } }),
        ]);
      // A Service with no endpoints: the API server cannot call the webhook.
      await patchSelector({ 'app.kubernetes.io/name': 'nobody', 'app.kubernetes.io/instance': null });
      try {
        const r = await alice.tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:${ECHO_PORT}`], {
          check: false,
        });
        assert.is.not(r.code, 0);
        assert.match(r.stderr, /agent not injected: webhook unreachable/);
        // The refused intercept's rollout runs on after the error, every new pod without the agent: let it
        // finish while the webhook is still away, so no pod of it starts once the webhook is back.
        await rolloutStatus(c, NS, 'echo');
        const pods = await waitFor('2 ready echo pods without the agent', async () => {
          const ready = (await echoPods()).filter((p) => p.ready && p.phase === 'Running');
          return ready.length === 2 ? ready : null;
        });
        assert.is(pods.length, 2);
        assert.ok((await podSpecs()).every((p) => !injected(p)));
      } finally {
        await patchSelector({
          ...svc.spec.selector,
          'app.kubernetes.io/name': svc.spec.selector['app.kubernetes.io/name']!,
        });
        // The next scenarios' pods must not start before the API server reaches the webhook again.
        await waitForWebhook(c, NS);
      }
      assert.ok(answersFromCluster(await curlFromClient()), 'the app still answers');
    },
  );

  scenario(
    'tp intercept echo: both replicas roll with the agent, every request answers "laptop"',
    async () => {
      const r = await alice.tp([
        'intercept',
        'echo',
        '-n',
        NS,
        '--port',
        `${LOCAL_PORT}:${ECHO_PORT}`,
        '--env-json',
        `${alice.runDir}/env.json`,
      ]);
      assert.match(r.stdout, /Intercepting/);
      const pods = await waitFor('2 injected echo pods', async () => {
        const specs = await podSpecs();
        return specs.length === 2 && specs.every(injected) ? specs : null;
      });
      assert.is(pods.length, 2);
      // Both agents serve the intercept.
      const active = await waitFor('both pods to serve the intercept', async () => {
        const i = await interceptOf(alice, 'echo');
        const pods = i?.pods ?? [];
        return pods.filter((p) => p.disposition === 'ACTIVE').length === 2 ? pods : null;
      });
      assert.is(active.length, 2);
      // A rollout leaves kube-proxy a moment to drop the old endpoints (plain `kubectl rollout restart`
      // shows the same on the lab): wait until the Service's endpoints are exactly the two injected pods
      // (no terminating one kube-proxy may still pick: on kind a request to one timed out once) and the
      // Service answers, then every request must be "laptop".
      await waitForEndpoints(
        c,
        NS,
        'echo',
        2,
        (await echoPods()).map((p) => p.ip),
      );
      await waitFor(
        'the Service to answer "laptop"',
        async () => (await curlFromClient()) === 'laptop',
        60_000,
      );
      for (let i = 0; i < 10; i++) assert.is(await curlFromClient(), 'laptop', `request ${i + 1}`);
      // Each pod's connections come straight from its agent, through a port-forward to the pod (the real
      // kubelet and containerd reach the agent's loopback-only port), not through the manager: its debug
      // log relays none of the next 10.
      const direct = await waitFor('both pods to send their connections straight', async () => {
        const pods = (await interceptOf(alice, 'echo'))?.pods ?? [];
        return pods.filter((p) => /^connections straight from the agent/.test(p.message ?? '')).length === 2
          ? pods
          : null;
      });
      assert.is(direct.length, 2);
      const relayed = async () =>
        (await kubectl(c, ['logs', '-n', MANAGER_NS, 'deploy/traffic-manager'])).stdout.split(
          'relaying intercepted connection',
        ).length;
      const relayedBefore = await relayed();
      for (let i = 0; i < 10; i++) assert.is(await curlFromClient(), 'laptop', `direct request ${i + 1}`);
      assert.is(await relayed(), relayedBefore, 'the manager relayed none of them');
      const env = await onWorkstation(c, ['cat', `${alice.runDir}/env.json`]);
      assert.is(JSON.parse(env.stdout).PORT, String(ECHO_PORT), "the intercepted container's environment");
    },
  );

  scenario(
    '50 sequential requests on one connection through the intercept all reach the laptop',
    async () => {
      // Behaviour, not speed: bench/round-trip is the guard against the round trip growing (44 ms each before
      // TCP_NODELAY on the port-forward; a regression would still pass here). The time is printed for the record.
      const r = await execInPod(
        c,
        NS,
        'client',
        ['node', '-e', sequentialClientSource(`${serviceUrl}/`, 50)],
        {
          check: false,
        },
      );
      checkSequential(r, 50, (b) => b === 'laptop', 'the intercept');
    },
  );

  scenario('the container ports and the Service are unchanged', async () => {
    const now = await snapshotApp();
    assert.is(now.service, servicesBefore);
    assert.is(now.containers, containersBefore);
    for (const p of await podSpecs()) {
      const app = p.spec.containers.find((x) => x.name === 'echo')!;
      assert.equal(app.ports, [{ name: 'http', containerPort: ECHO_PORT, protocol: 'TCP' }]);
    }
  });

  scenario(
    'tp list -o json and tp describe show the agent, the intercept and the rules in the pod',
    async () => {
      const list = JSON.parse((await alice.tp(['list', '-n', NS, '-o', 'json'])).stdout) as {
        workloads: { name: string; agentState?: string; intercepts?: unknown[]; agents?: unknown[] }[];
      };
      const echo = list.workloads.find((w) => w.name === 'echo')!;
      assert.ok(echo, 'echo is listed');
      assert.match(JSON.stringify(echo), /INSTALLED/);
      assert.match(JSON.stringify(echo), /laptop|18090|ACTIVE/);
      const d = await alice.tp(['describe', 'echo', '-n', NS]);
      assert.match(d.stdout, /Deployment tp-e2e-intercept\/echo/);
      assert.match(d.stdout, /8080 -> agent 15001/);
      assert.match(d.stdout, /iptables/);
      assert.match(d.stdout, /REDIRECT/, 'the capture rules as installed');
    },
  );

  scenario('a second workstation intercepting the same port is refused, naming who holds it', async () => {
    // Both "workstations" share the lab's workstation namespace, which has one VIF (alice's): bob needs none.
    await bob.tp(['connect', '--no-vif']);
    const r = await bob.tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT + 1}:${ECHO_PORT}`], {
      check: false,
    });
    assert.is.not(r.code, 0);
    assert.match(r.stderr, /already intercepted by \S+@\S+/);
    await bob.tp(['quit']);
    assert.is(await curlFromClient(), 'laptop', "alice's intercept is untouched");
  });

  scenario('100 MiB through the intercept from a cluster pod, byte-exact, both ways', async () => {
    const n = 100 * MiB;
    // Timings are printed for the record (cluster pod -> agent -> manager -> port-forward -> workstation), not asserted.
    const rate = (since: number) =>
      `${((Date.now() - since) / 1000).toFixed(1)} s, ${(100 / ((Date.now() - since) / 1000)).toFixed(1)} MiB/s`;
    let started = Date.now();
    const down = await execInPod(c, NS, 'client', [
      'sh',
      '-c',
      `curl -s --max-time 300 '${serviceUrl}/bytes?n=${n}' | sha256sum`,
    ]);
    assert.is(down.stdout.trim().split(/\s+/)[0], patternHash(n), 'downloaded bytes');
    process.stdout.write(`# 100 MiB from the workstation to a cluster pod: ${rate(started)}\n`);
    started = Date.now();
    const up = await execInPod(c, NS, 'client', [
      'sh',
      '-c',
      `head -c ${n} /dev/zero | tr '\\0' 'x' | curl -s --max-time 300 -X POST --data-binary @- ${serviceUrl}/sink`,
    ]);
    assert.is(
      up.stdout.trim(),
      createHash('sha256').update(Buffer.alloc(n, 'x')).digest('hex'),
      'uploaded bytes',
    );
    process.stdout.write(`# 100 MiB from a cluster pod to the workstation: ${rate(started)}\n`);
  });

  scenario('tp leave: the cluster answers again', async () => {
    await alice.tp(['leave', 'echo']);
    await waitFor('the echo pods to answer', async () => answersFromCluster(await curlFromClient()));
    for (let i = 0; i < 5; i++) assert.ok(answersFromCluster(await curlFromClient()));
  });

  scenario(
    "tp intercept … -- COMMAND: the command takes the traffic with the container's environment; when it exits, the intercept ends and tp exits with its status",
    async () => {
      const commandPort = LOCAL_PORT + 2;
      // Answers with PORT, which the echo Deployment sets in its container and the workstation does not;
      // /quit ends it with status 5.
      const app = `require('node:http').createServer((q, s) => { s.end('command PORT=' + process.env.PORT); if (q.url === '/quit') setTimeout(() => process.exit(5), 100); }).listen(${commandPort}, '127.0.0.1', () => console.log('command listening'))`;
      const run = startOnWorkstation(
        c,
        tpArgv(
          c,
          alice.runDir,
        )(['intercept', 'echo', '-n', NS, '--port', `${commandPort}:${ECHO_PORT}`, '--', 'node', '-e', app]),
      );
      try {
        await run.waitForOutput(/command listening/, 120_000);
        assert.match(run.output(), /Intercepting tp-e2e-intercept\/echo port/);
        await waitFor(
          'the command to answer through the intercept',
          async () => (await curlFromClient()) === `command PORT=${ECHO_PORT}`,
        );
        assert.is(await curlFromClient('/quit'), `command PORT=${ECHO_PORT}`);
        assert.is(await run.exited(60_000), 5, run.output());
        assert.match(run.output(), /node exited \(status 5\); left intercept echo/);
        assert.is(await interceptOf(alice, 'echo'), undefined);
        await waitFor('the echo pods to answer', async () => answersFromCluster(await curlFromClient()));
      } finally {
        await run.stop();
      }
    },
  );

  scenario('tp intercept … -- a program that is not there: refused before any intercept exists', async () => {
    const r = await alice.tp(
      ['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:${ECHO_PORT}`, '--', 'tp-no-such-program'],
      { check: false },
    );
    assert.is(r.code, 1);
    assert.match(r.stderr, /cannot run "tp-no-such-program": not found on PATH/);
    assert.is(r.stdout, '');
    assert.is(await interceptOf(alice, 'echo'), undefined);
  });

  scenario(
    'the manager pod deleted mid-intercept: it comes back and the workstation restores the intercept (docs/faults.md)',
    async () => {
      await alice.tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:${ECHO_PORT}`]);
      assert.is(await curlFromClient(), 'laptop');
      await deleteManagerPods(c);
      let last = '';
      const outcome = await waitFor(
        'the intercept to be restored',
        async () => {
          const i = await interceptOf(alice, 'echo');
          last = i ? `${i.disposition}${i.message ? `: ${i.message}` : ''}` : 'no intercept';
          if (!i || /not restored/.test(i.message ?? '')) return 'gone';
          return i.disposition === 'ACTIVE' && (await curlFromClient()) === 'laptop' ? 'restored' : null;
        },
        180_000,
        2_000,
      ).catch((e: Error) => {
        throw new Error(`${e.message}; last seen: ${last || 'nothing'}`);
      });
      assert.is(outcome, 'restored', `the intercept was not restored: ${last}`);
    },
  );

  scenario(
    'the workstation quits without tp leave: the intercept expires, traffic returns to the app',
    async () => {
      if (!(await interceptOf(alice, 'echo')))
        await alice.tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:${ECHO_PORT}`]);
      await waitFor('laptop to answer', async () => (await curlFromClient()) === 'laptop');
      const st = JSON.parse((await alice.tp(['status', '-o', 'json'])).stdout) as { daemon: { pid: number } };
      process.kill(st.daemon.pid, 'SIGKILL');
      await waitFor(
        'the cluster to answer once the session expired',
        async () => answersFromCluster(await curlFromClient()),
        90_000,
      );
    },
  );

  scenario('tp uninstall --agent echo: the pods roll back to exactly what was deployed', async () => {
    await alice.tp(['connect']);
    const r = await alice.tp(['uninstall', '--agent', 'echo', '-n', NS]);
    assert.is(r.code, 0);
    await waitFor('echo pods without agent and init container', async () => {
      const specs = await podSpecs();
      return (
        specs.length === 2 && specs.every((p) => !injected(p) && (p.spec.initContainers ?? []).length === 0)
      );
    });
    await waitFor('2 ready echo pods', async () => (await echoPods()).filter((p) => p.ready).length === 2);
    await waitFor('the echo pods to answer', async () => answersFromCluster(await curlFromClient()), 60_000);
    assert.is((await snapshotApp()).containers, containersBefore);
  });

  scenario('helm uninstall removes the agents from all workloads', async () => {
    await alice.tp(['intercept', 'echo', '-n', NS, '--port', `${LOCAL_PORT}:${ECHO_PORT}`]);
    await waitFor('injected pods', async () => (await podSpecs()).every(injected));
    await alice.tp(['quit']);
    await alice.tp(['helm', 'uninstall'], { timeoutMs: 360_000 });
    await waitFor(
      'echo pods without the agent',
      async () => {
        const specs = await podSpecs();
        return specs.length === 2 && specs.every((p) => !injected(p));
      },
      180_000,
    );
    const template = await kubectlJson<{
      spec: { template: { metadata: { annotations?: Record<string, string> } } };
    }>(c, ['get', 'deployment', 'echo', '-n', NS]);
    assert.is(template.spec.template.metadata.annotations?.['tp.dev/inject-agent'], undefined);
  });
}

test.run();
