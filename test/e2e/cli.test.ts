// Issue 14 acceptance: the CLI as a Telepresence user expects it, on a real cluster. The user connects with
// -n and never names the namespace again; intercepts by a Service port's name; tp list shows the connected
// namespace and, across namespaces, no system workloads; the manager's Prometheus metrics are scraped from
// a pod in the cluster (where a Prometheus would be) and parsed.
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import { readArchive } from '../../cli/gather-logs.js';
import {
  apply,
  type Background,
  execInPod,
  freshNamespace,
  kubectl,
  kubectlJson,
  MANAGER_NS,
  onWorkstation,
  rolloutStatus,
  startClientPod,
  startOnWorkstation,
  tpOnWorkstation,
  waitFor,
} from './kube.js';
import { afterSetup, clusterSuite } from './suite.js';
import { echoDeployment, echoService } from './workloads.js';

const NS = 'tp-e2e-cli';
const LOCAL_PORT = 18190;
const METRICS_PORT = 9090;

const { test, cluster } = await clusterSuite('the CLI as users expect it');

const laptopApp = `
require('node:http').createServer((req, res) => res.end('laptop'))
  .listen(${LOCAL_PORT}, '127.0.0.1', () => console.log('laptop app listening'));
`;

/** A second Service selecting echo, whose port is named "web" (port 8000 -> the container port "http"). */
const publicService = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'echo-public' },
  spec: { selector: { app: 'echo' }, ports: [{ name: 'web', port: 8000, targetPort: 'http' }] },
};

interface ListJson {
  workloads: { name: string; namespace: string; intercepts?: { name: string }[] }[];
}

/** name{labels} -> value, from the Prometheus text format; throws on a line that is neither. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text format: ${line}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

if (cluster) {
  const c = cluster;
  const runDir = '/tmp/tpk-e2e-cli';
  const tp = tpOnWorkstation(c, runDir);
  let laptop: Background | undefined;
  let installedHere = false;

  const curl = async (url: string) => {
    const r = await execInPod(c, NS, 'client', ['curl', '-sS', '--max-time', '10', url], { check: false });
    return r.code === 0 ? r.stdout : `curl failed (exit ${r.code}): ${r.stderr.trim()}`;
  };
  const list = async (...args: string[]) =>
    (JSON.parse((await tp(['list', ...args, '-o', 'json'])).stdout) as ListJson).workloads.map(
      (w) => `${w.namespace}/${w.name}`,
    );
  const metrics = async () =>
    parseMetrics(await curl(`http://traffic-manager-metrics.${MANAGER_NS}:${METRICS_PORT}/metrics`));

  const scenario = afterSetup(test, async () => {
    await freshNamespace(c, NS);
    await apply(c, [echoDeployment(c, 'echo', 1), echoService(), publicService], NS);
    await startClientPod(c, NS);
    await rolloutStatus(c, NS, 'echo');
    // The chart with its metrics on: installed here, or an installed release upgraded to them.
    const hooks = await kubectl(
      c,
      ['get', 'mutatingwebhookconfiguration', `tp-agent-injector-${MANAGER_NS}`],
      { check: false },
    );
    const verb = hooks.code === 0 ? 'upgrade' : 'install';
    await tp(['helm', verb, '--set', 'metrics.enabled=true', '--set', `metrics.port=${METRICS_PORT}`], {
      timeoutMs: 360_000,
    });
    installedHere = verb === 'install';
    await rolloutStatus(c, MANAGER_NS, 'traffic-manager');
    laptop = startOnWorkstation(c, [process.execPath, '-e', laptopApp]);
    await laptop.waitForOutput(/laptop app listening/);
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
  });

  scenario('tp connect -n: the namespace every later command defaults to', async () => {
    const bad = await tp(['connect', '-n', NS, '--mapped-namespaces', 'elsewhere'], { check: false });
    assert.is.not(bad.code, 0);
    assert.match(bad.stderr, `-n ${NS} is not among --mapped-namespaces elsewhere`);
    await tp(['connect', '--no-vif', '-n', NS]);
    const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as { namespace: string };
    assert.is(st.namespace, NS);
  });

  scenario(
    'tp list: the connected namespace; -A without kube-system and tp-system; --system with them',
    async () => {
      assert.equal(await list(), [`${NS}/echo`]);
      const all = await list('-A');
      assert.ok(all.includes(`${NS}/echo`), all.join(' '));
      assert.ok(
        all.every((w) => !w.startsWith('kube-system/') && !w.startsWith(`${MANAGER_NS}/`)),
        `no system workloads: ${all.join(' ')}`,
      );
      const withSystem = await list('-A', '--system');
      assert.ok(
        withSystem.some((w) => w.startsWith('kube-system/') || w.startsWith(`${MANAGER_NS}/`)),
        `system workloads with --system: ${withSystem.join(' ')}`,
      );
      const bad = await tp(['list', '--system'], { check: false });
      assert.is.not(bad.code, 0);
      assert.match(bad.stderr, /--system goes with -A/);
    },
  );

  scenario('tp intercept by a Service port name: bad names list the candidates', async () => {
    const unknown = await tp(['intercept', 'echo', '--port', `${LOCAL_PORT}:nope`], { check: false });
    assert.is.not(unknown.code, 0);
    assert.match(unknown.stderr, /has no port nope: use one of/);
    assert.match(unknown.stderr, /Service echo-public port 8000 "web" -> 8080/);
    const wrongService = await tp(
      ['intercept', 'echo', '--port', `${LOCAL_PORT}:web`, '--service', 'other'],
      {
        check: false,
      },
    );
    assert.is.not(wrongService.code, 0);
    assert.match(
      wrongService.stderr,
      /Service "other" does not select .*: the Services that do are echo, echo-public/,
    );
    // No -n: the connected namespace.
    const r = await tp(['intercept', 'echo', '--port', `${LOCAL_PORT}:web`, '--service', 'echo-public']);
    assert.match(r.stdout, /Intercepting/);
    const listed = JSON.parse((await tp(['list', '-o', 'json'])).stdout) as ListJson;
    const echo = listed.workloads.find((w) => w.name === 'echo');
    assert.equal(
      echo?.intercepts?.map((i) => i.name),
      ['echo'],
    );
    const body = await waitFor('the intercepted Service answering "laptop"', async () => {
      const b = (await curl(`http://echo-public.${NS}:8000/`)).trim();
      return b === 'laptop' ? b : null;
    });
    assert.is(body, 'laptop');
    // tp status: this tp, the manager and the agent at one version, no warning.
    const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as {
      versions?: {
        client: string;
        manager: string;
        agents: { version: string; pods: number }[];
        mismatches: string[];
      };
    };
    assert.ok(st.versions, 'versions in tp status');
    assert.is(st.versions!.manager, st.versions!.client);
    assert.equal(st.versions!.agents, [{ version: st.versions!.client, pods: 1 }]);
    assert.equal(st.versions!.mismatches, []);
  });

  scenario('the metrics: scraped from a pod, parsed, the intercept and the agent counted', async () => {
    const m = await waitFor(
      'the agent to report an intercepted connection',
      async () => {
        const now = await metrics();
        return (now.get('tp_agent_connections_total{outcome="intercepted"}') ?? 0) >= 1 ? now : null;
      },
      60_000,
      2_000,
    );
    assert.is(m.get('tp_intercepts{disposition="ACTIVE"}'), 1);
    assert.ok((m.get('tp_sessions{kind="client"}') ?? 0) >= 1);
    assert.is(m.get(`tp_agents{namespace="${NS}"}`), 1);
    // Through the manager's relay or straight from the agent (a port-forward to its pod, the usual path).
    const relayed = m.get('tp_tunnel_flows_total{kind="intercept"}') ?? 0;
    const direct = m.get('tp_agent_connections_total{outcome="intercepted_direct"}');
    assert.ok(direct !== undefined, 'the direct connections are counted');
    assert.ok(relayed + direct! >= 1);
    assert.ok(m.has('tp_authorization_refusals_total{code="permission_denied"}'));
  });

  scenario(
    'tp-init status with no flags: refused honestly in tp-agent, a live status from kubectl debug',
    async () => {
      const pods = await kubectlJson<{
        items: { metadata: { name: string }; spec: { containers: { name: string; image: string }[] } }[];
      }>(c, ['get', 'pods', '-n', NS, '-l', 'app=echo']);
      const pod = pods.items.find((p) => p.spec.containers.some((x) => x.name === 'tp-agent'));
      assert.ok(pod, 'an injected echo pod');
      const name = pod!.metadata.name;
      const image = pod!.spec.containers.find((x) => x.name === 'tp-agent')!.image;
      // In the agent container (no capabilities on a real node): exit 2, and what to run instead.
      const inAgent = await execInPod(c, NS, name, ['tp-init', 'status'], {
        check: false,
        container: 'tp-agent',
      });
      assert.is(inAgent.code, 2, inAgent.stderr);
      assert.match(inAgent.stderr, `kubectl debug -n ${NS} ${name} -it --profile=netadmin`);
      assert.match(inAgent.stderr, `kubectl logs -n ${NS} ${name} -c tp-init`);
      // What the message says: a debug container with NET_ADMIN as root.
      const custom = `${runDir}/debug-root.json`;
      fs.mkdirSync(runDir, { recursive: true });
      fs.writeFileSync(custom, JSON.stringify({ securityContext: { runAsUser: 0 } }));
      await kubectl(c, [
        'debug',
        '-n',
        NS,
        name,
        '--profile=netadmin',
        `--custom=${custom}`,
        `--image=${image}`,
        '--image-pull-policy=IfNotPresent',
        '-c',
        'tp-status',
        '--',
        'tp-init',
        'status',
        '-o',
        'json',
      ]);
      const exitCode = await waitFor('the debug container to finish', async () => {
        const p = await kubectlJson<{
          status: {
            ephemeralContainerStatuses?: { name: string; state: { terminated?: { exitCode: number } } }[];
          };
        }>(c, ['get', 'pod', '-n', NS, name]);
        const t = p.status.ephemeralContainerStatuses?.find((x) => x.name === 'tp-status')?.state.terminated;
        return t ? { code: t.exitCode } : null;
      });
      const logs = await kubectl(c, ['logs', '-n', NS, name, '-c', 'tp-status']);
      assert.is(exitCode.code, 0, logs.stdout);
      const status = JSON.parse(logs.stdout) as {
        inPlace: boolean;
        iptables: {
          families: { family: number; capture: string; rules: { line: string; packets?: number }[] }[];
        };
      };
      assert.ok(status.inPlace);
      const v4 = status.iptables.families.find((f) => f.family === 4)!;
      assert.match(v4.capture, /IPv4 capture of app ports 8080 to agent port \d+, agent uid \d+/);
      const inbound = v4.rules.find((r) => r.line.startsWith('-A TP_INBOUND'));
      assert.ok((inbound?.packets ?? 0) >= 1, 'the intercepted requests went through the inbound rule');
    },
  );

  scenario(
    'tp gather-logs: one archive with the daemons, the manager, the agent and tp-init, and an index',
    async () => {
      const bad = await tp(['gather-logs', '-o', `${runDir}/logs.zip`], { check: false });
      assert.is.not(bad.code, 0);
      assert.match(bad.stderr, /no zip library\): use -o .*logs\.tar\.gz/);
      const file = `${runDir}/logs.tar.gz`;
      const r = await tp(['gather-logs', '-o', file]);
      assert.match(r.stdout, `Wrote ${file}`);
      const archive = await readArchive(file);
      const names = [...archive.keys()];
      const index = JSON.parse(archive.get('tp-logs/index.json') ?? '{}') as {
        files: { name: string }[];
        errors: string[];
      };
      assert.equal(index.errors, [], 'everything was gathered');
      assert.equal(
        index.files.map((f) => `tp-logs/${f.name}`).sort(),
        names.filter((n) => n !== 'tp-logs/index.json').sort(),
        'the index lists every file',
      );
      assert.ok(names.includes('tp-logs/daemons/connector.log'), names.join(' '));
      assert.match(archive.get('tp-logs/daemons/connector.log')!, /intercept/);
      const manager = names.find(
        (n) => n.startsWith(`tp-logs/cluster/${MANAGER_NS}/traffic-manager-`) && n.endsWith('/manager.log'),
      );
      assert.ok(manager, names.join(' '));
      assert.match(archive.get(manager!)!, /intercept created/);
      const agentLog = names.find(
        (n) => n.startsWith(`tp-logs/cluster/${NS}/echo-`) && n.endsWith('/tp-agent.log'),
      );
      assert.ok(agentLog, names.join(' '));
      assert.ok(names.some((n) => n.startsWith(`tp-logs/cluster/${NS}/echo-`) && n.endsWith('/tp-init.log')));
      const env = archive.get(agentLog!.replace(/\.log$/, '.env'))!;
      assert.match(env, /^TP_PORTS=/m);
      assert.match(env, /^TP_NAMESPACE=<from fieldRef metadata.namespace>$/m);
      assert.match(archive.get('tp-logs/workstation/status.json')!, /"state": "CONNECTED"/);
    },
  );

  scenario(
    'tp config view, tp completion bash, tp list --watch -o json-stream (a line per change)',
    async () => {
      const config = JSON.parse((await tp(['config', 'view', '-o', 'json'])).stdout) as {
        config: { key: string; value: unknown; source: string }[];
      };
      const ns = config.config.find((e) => e.key === 'namespace');
      assert.equal(ns, {
        key: 'namespace',
        value: NS,
        source: "tp connect -n, else the context's namespace",
      });
      assert.is(config.config.find((e) => e.key === 'runDir')?.source, '$TP_RUN_DIR');
      const script = (await tp(['completion', 'bash'])).stdout;
      const completed = await onWorkstation(c, [
        'bash',
        '-c',
        `${script}\nCOMP_WORDS=(tp gather); COMP_CWORD=1; _tp; echo "\${COMPREPLY[@]}"`,
      ]);
      assert.is(completed.stdout.trim(), 'gather-logs');
      // Watching: the intercept is listed, then tp leave shows as a new line without it.
      const watch = startOnWorkstation(c, [
        'env',
        `TP_RUN_DIR=${runDir}/run`,
        `TP_LOG_DIR=${runDir}/logs`,
        process.execPath,
        '--',
        new URL('../../cli/main.js', import.meta.url).pathname,
        'list',
        '--watch',
        '-o',
        'json-stream',
      ]);
      const lines = () =>
        watch
          .output()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as ListJson);
      const intercepted = (l: ListJson) =>
        (l.workloads.find((w) => w.name === 'echo')?.intercepts ?? []).length;
      try {
        await waitFor('the first line, with the intercept', () => lines().length > 0);
        assert.is(intercepted(lines()[0]!), 1);
        await tp(['leave', 'echo']);
        await waitFor('a line without the intercept', () => lines().some((l) => intercepted(l) === 0));
        assert.ok(
          lines().every((l) => l.workloads.every((w) => w.namespace === NS)),
          'the connected namespace only',
        );
      } finally {
        await watch.stop();
      }
    },
  );

  scenario('tp uninstall --agent in the connected namespace', async () => {
    const r = await tp(['uninstall', '--agent', 'echo'], { timeoutMs: 240_000 });
    assert.match(r.stdout, `Removing the agent from ${NS}/echo`);
    await rolloutStatus(c, NS, 'echo');
    // The pods without the agent answer again once the Service's endpoints follow the rollout.
    const body = await waitFor('echo answering from the cluster again', async () => {
      const b = (await curl(`http://echo.${NS}/`)).trim();
      return b.startsWith('echo-') ? b : null;
    });
    assert.match(body, /^echo-/);
  });
}

test.run();
