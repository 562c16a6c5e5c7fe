// What a real node (kubelet + containerd + runc) changes for tp, checked on it (issue 10):
// - probes hold on any CNI: an intercepted pod with httpGet, gRPC, tcpSocket and exec probes (named and
//   numeric ports) stays Ready and is never restarted while the workstation's app is stopped, failing or
//   slow, and no probe ever reaches the workstation;
// - capabilities as on a real cluster: the agent container has none and cannot touch the capture rules,
//   the app container has the runtime's defaults (no NET_ADMIN), tp-init's log shows the rules an admin
//   reads, and `tp describe` says what it could and could not see.
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import { defaultArchivePath } from '../../image/tp-image.js';
import { VERSION } from '../../version/version.js';
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
} from './kube.js';
import { afterSetup, clusterSuite } from './suite.js';
import { deployment } from './workloads.js';

const NS = 'tp-e2e-real-node';
const LOCAL_PORT = 18095;
const APP_PORT = 8080;
const GRPC_PORT = 9090;
const SIDE_PORT = 8081;
/** How long the pod must stay Ready with the workstation's app stopped, failing and slow (a third each). */
const HOLD_MS = 120_000;

const { test, cluster } = await clusterSuite('real node: probes and capabilities');

/**
 * The app in the pod: HTTP on 8080 (/healthz for the readiness probe, "app" otherwise) and the gRPC health
 * service on 9090, written on node:http2 (the shell image has Node but no npm modules). Every probe it
 * answers is logged, so the test can see the probes reach the app.
 */
const podApp = `
const http = require('node:http');
const http2 = require('node:http2');
http.createServer((req, res) => {
  if (req.url === '/healthz') { console.log('probe', req.headers['user-agent']); return res.end('ok'); }
  res.end('app');
}).listen(${APP_PORT}, () => console.log('http on ${APP_PORT}'));
const grpc = http2.createServer();
grpc.on('stream', (stream, headers) => {
  if (headers[':path'] !== '/grpc.health.v1.Health/Check') {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true });
    return;
  }
  stream.on('data', () => {});
  stream.on('end', () => {
    console.log('grpc health check');
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    // HealthCheckResponse { status: SERVING (1) }: a 5-byte gRPC prefix, then field 1 = 1.
    stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
  });
});
grpc.listen(${GRPC_PORT}, () => console.log('grpc on ${GRPC_PORT}'));
`;

/**
 * The workstation's app: its mode comes from argv (ok | fail | slow); every request is logged as one JSON
 * line, so the test can prove that no probe ever arrived here.
 */
const laptopApp = `
const mode = process.argv[1] || 'ok';
require('node:http').createServer((req, res) => {
  console.log(JSON.stringify({ url: req.url, ua: req.headers['user-agent'] || '' }));
  if (mode === 'fail') { res.statusCode = 500; return res.end('laptop failing'); }
  if (mode === 'slow') return setTimeout(() => res.end('laptop slow'), 8000);
  res.end('laptop');
}).listen(${LOCAL_PORT}, '127.0.0.1', () => console.log('laptop app listening in mode ' + mode));
`;

function probedWorkload(shellImage: string, echoImage: string): object[] {
  const labels = { app: 'probed' };
  return [
    deployment('probed', labels, {
      terminationGracePeriodSeconds: 5,
      containers: [
        {
          name: 'app',
          image: shellImage,
          command: ['node', '-e', podApp],
          ports: [
            { name: 'http', containerPort: APP_PORT },
            { name: 'grpc', containerPort: GRPC_PORT },
          ],
          // Named ports for httpGet and tcpSocket, a numeric one for gRPC; tight thresholds, so a
          // probe that reached the workstation would show within seconds.
          startupProbe: { tcpSocket: { port: 'http' }, periodSeconds: 1, failureThreshold: 30 },
          readinessProbe: {
            httpGet: { path: '/healthz', port: 'http' },
            periodSeconds: 2,
            timeoutSeconds: 2,
            failureThreshold: 1,
          },
          livenessProbe: {
            grpc: { port: GRPC_PORT },
            periodSeconds: 2,
            timeoutSeconds: 2,
            failureThreshold: 2,
          },
        },
        {
          name: 'side',
          image: echoImage,
          env: [{ name: 'PORT', value: String(SIDE_PORT) }],
          ports: [{ containerPort: SIDE_PORT }],
          readinessProbe: { exec: { command: ['node', '-e', 'process.exit(0)'] }, periodSeconds: 5 },
          livenessProbe: {
            httpGet: { path: '/', port: SIDE_PORT },
            periodSeconds: 2,
            failureThreshold: 2,
          },
        },
      ],
    }),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'probed' },
      spec: { selector: labels, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    },
  ];
}

interface PodJson {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { containers: { name: string }[]; initContainers?: { name: string }[] };
  status: {
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; restartCount: number; ready: boolean; imageID: string }[];
    initContainerStatuses?: { name: string; imageID: string }[];
  };
}

if (cluster) {
  const c = cluster;
  const runDir = '/tmp/tpk-e2e-real-node';
  const tp = tpOnWorkstation(c, runDir);
  let laptop: Background | undefined;
  let installedHere = false;

  const pods = async () =>
    (await kubectlJson<{ items: PodJson[] }>(c, ['get', 'pods', '-n', NS, '-l', 'app=probed'])).items.filter(
      (p) => !p.metadata.deletionTimestamp,
    );
  const injectedPod = async () => {
    const p = await waitFor(
      'the injected probed pod, Ready',
      async () => {
        const all = await pods();
        const one = all.length === 1 ? all[0]! : undefined;
        const ready = one?.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True');
        return one?.spec.containers.some((x) => x.name === 'tp-agent') && ready ? one : null;
      },
      180_000,
    );
    return p;
  };
  const curlFromClient = async () => {
    const r = await execInPod(c, NS, 'client', ['curl', '-sS', '--max-time', '12', `http://probed.${NS}/`], {
      check: false,
    });
    return r.code === 0 ? r.stdout.trim() : `curl failed (exit ${r.code}): ${r.stderr.trim()}`;
  };
  const startLaptop = async (mode: 'ok' | 'fail' | 'slow') => {
    await laptop?.stop();
    laptop = startOnWorkstation(c, [process.execPath, '-e', laptopApp, mode]);
    await laptop.waitForOutput(/laptop app listening/);
  };
  /** Every request the workstation's app has logged (all of its runs). */
  const laptopRequests: { url: string; ua: string }[] = [];
  const collectLaptopRequests = () => {
    for (const line of laptop?.output().split('\n') ?? []) {
      if (line.startsWith('{')) laptopRequests.push(JSON.parse(line) as { url: string; ua: string });
    }
  };

  const scenario = afterSetup(test, async () => {
    fs.mkdirSync(runDir, { recursive: true });
    await freshNamespace(c, NS);
    await apply(c, probedWorkload(c.images.shell, c.images.echo), NS);
    await startClientPod(c, NS);
    await rolloutStatus(c, NS, 'probed');
    const hooks = await kubectl(
      c,
      ['get', 'mutatingwebhookconfiguration', `tp-agent-injector-${MANAGER_NS}`],
      {
        check: false,
      },
    );
    if (hooks.code !== 0) {
      await tp(['helm', 'install'], { timeoutMs: 360_000 });
      installedHere = true;
    }
    await rolloutStatus(c, MANAGER_NS, 'traffic-manager');
    await startLaptop('ok');
    await tp(['connect']);
  });

  test.after(async () => {
    await tp(['leave', 'probed'], { check: false }).catch(() => {});
    await tp(['quit'], { check: false }).catch(() => {});
    await laptop?.stop();
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=true', '--timeout=120s'], {
      check: false,
      timeoutMs: 150_000,
    }).catch(() => {});
    if (installedHere) await tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  if (c.kind === 'lab') {
    scenario(
      'the node is a real kubelet with containerd, and the pods run from imported images',
      async () => {
        const nodes = await kubectl(c, ['get', 'nodes', '-o', 'wide']);
        assert.match(nodes.stdout, /containerd:\/\/1\.6/);
        const ids = await kubectlJson<{
          items: { status: { containerStatuses?: { containerID?: string }[] } }[];
        }>(c, ['get', 'pods', '-n', 'kube-system']);
        const containerIds = ids.items
          .flatMap((p) => p.status.containerStatuses ?? [])
          .map((s) => s.containerID);
        assert.ok(
          containerIds.length > 0 && containerIds.every((id) => id?.startsWith('containerd://')),
          String(containerIds),
        );
      },
    );
  }

  scenario('tp intercept: the injected pod is Ready, the Service answers from the workstation', async () => {
    const r = await tp(['intercept', 'probed', '-n', NS, '--port', `${LOCAL_PORT}:${APP_PORT}`], {
      timeoutMs: 240_000,
    });
    assert.match(r.stdout, /Intercepting/);
    await injectedPod();
    await waitFor(
      'the Service to answer from the workstation',
      async () => (await curlFromClient()) === 'laptop',
      60_000,
    );
  });

  scenario(
    'the workstation app stopped, failing, then slow for 2 minutes: the pod stays Ready, no restart, no probe reaches the workstation',
    async () => {
      const before = await injectedPod();
      const phaseMs = HOLD_MS / 3;
      const samples: string[] = [];
      const hold = async (phase: string) => {
        const until = Date.now() + phaseMs;
        while (Date.now() < until) {
          const [p] = await pods();
          const ready = p?.status.conditions?.find((x) => x.type === 'Ready')?.status;
          const restarts = (p?.status.containerStatuses ?? []).reduce((n, s) => n + s.restartCount, 0);
          if (p?.metadata.name !== before.metadata.name || ready !== 'True' || restarts !== 0) {
            samples.push(`${phase}: pod ${p?.metadata.name ?? '(none)'} Ready=${ready} restarts=${restarts}`);
          }
          await new Promise((r) => setTimeout(r, 2_000));
        }
      };
      collectLaptopRequests();
      await laptop?.stop();
      laptop = undefined;
      // The intercept still takes the Service's connections: they are refused at the workstation.
      assert.match(await curlFromClient(), /curl failed/);
      await hold('workstation app stopped');
      await startLaptop('fail');
      assert.is(await curlFromClient(), 'laptop failing');
      await hold('workstation app failing');
      collectLaptopRequests();
      await startLaptop('slow');
      await hold('workstation app slow');
      collectLaptopRequests();
      assert.equal(samples, [], 'the pod stayed Ready with no restart throughout');
      const probes = laptopRequests.filter((r) => /kube-probe/i.test(r.ua) || r.url.startsWith('/healthz'));
      assert.equal(probes, [], 'no probe reached the workstation');
      assert.ok(laptopRequests.length > 0, 'the workstation app did see the client requests');
      // The probes did run: the app in the pod answered them.
      const appLog = await kubectl(c, ['logs', '-n', NS, before.metadata.name, '-c', 'app', '--since=60s']);
      assert.match(appLog.stdout, /probe kube-probe/);
      assert.match(appLog.stdout, /grpc health check/);
      await startLaptop('ok');
    },
  );

  scenario(
    'capabilities: the agent has none and cannot change the rules; the app has no NET_ADMIN',
    async () => {
      const { metadata } = await injectedPod();
      const capEff = async (container: string) => {
        const r = await execInPod(c, NS, metadata.name, ['cat', '/proc/1/status'], { container });
        const hex = /^CapEff:\s+([0-9a-f]+)$/m.exec(r.stdout)?.[1];
        assert.ok(hex, `CapEff of ${container}: ${r.stdout}`);
        return BigInt(`0x${hex}`);
      };
      const NET_ADMIN = 1n << 12n;
      assert.is(await capEff('tp-agent'), 0n, 'the agent runs with no capability at all');
      assert.is((await capEff('app')) & NET_ADMIN, 0n, 'the app container has no NET_ADMIN');
      for (const argv of [
        ['iptables-save', '-t', 'nat'],
        ['iptables', '-t', 'nat', '-F'],
      ]) {
        const r = await execInPod(c, NS, metadata.name, argv, { container: 'tp-agent', check: false });
        assert.is.not(r.code, 0, `\`${argv.join(' ')}\` in the agent container must fail: ${r.stdout}`);
        assert.match(`${r.stdout}${r.stderr}`, /[Pp]ermission denied|not permitted|NET_ADMIN/);
      }
      // The rules are still whole afterwards: the Service answers from the workstation.
      await waitFor(
        'the Service to answer from the workstation',
        async () => (await curlFromClient()) === 'laptop',
        30_000,
      );
    },
  );

  scenario(
    'kubectl logs -c tp-init: the rules as an admin reads them; tp describe says what it sees',
    async () => {
      const { metadata } = await injectedPod();
      const logs = await kubectl(c, ['logs', '-n', NS, metadata.name, '-c', 'tp-init']);
      assert.match(logs.stdout, /TP_/, 'the chains carry the TP_ prefix');
      assert.match(logs.stdout, new RegExp(`${APP_PORT}`), 'the captured port is in the rules');
      const describe = await tp(['describe', 'probed', '-n', NS]);
      assert.match(describe.stdout, /tp-init/);
      assert.match(describe.stdout, /TP_/);
    },
  );

  scenario('kubectl logs -c tp-agent: the agent passes connections through on its own thread', async () => {
    const { metadata } = await injectedPod();
    const logs = await kubectl(c, ['logs', '-n', NS, metadata.name, '-c', 'tp-agent']);
    // In tp's image, as its UID, without capabilities: the thread's bundle is beside the agent's and koffi
    // loads (agent/passthrough-thread.ts); a thread that could not start would say so here.
    assert.match(logs.stdout + logs.stderr, /passing connections through on the passthrough thread/);
    assert.not.match(logs.stdout + logs.stderr, /passing connections through on the main thread/);
  });

  if (c.kind === 'lab') {
    scenario("the injected pod runs tp's own image as `npm run image` built it", async () => {
      const p = await injectedPod();
      // `npm run image`'s archive and its build record (image/README.md), as the lab imported them.
      const record = JSON.parse(
        fs.readFileSync(`${defaultArchivePath(`tp/tp:${VERSION}`)}.build.json`, 'utf8'),
      ) as { image: { imageId: string; manifestDigest: string } };
      const index = record.image;
      const tpStatuses = [
        ...(p.status.containerStatuses ?? []).filter((s) => s.name === 'tp-agent'),
        ...(p.status.initContainerStatuses ?? []).filter((s) => s.name === 'tp-init'),
      ];
      assert.is(tpStatuses.length, 2);
      for (const s of tpStatuses) {
        assert.ok(
          s.imageID.endsWith(index.manifestDigest) || s.imageID === index.imageId,
          `${s.name} runs ${s.imageID}, the archive is ${index.manifestDigest} (${index.imageId})`,
        );
      }
    });
  }
}

test.run();
