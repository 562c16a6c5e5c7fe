// Issue 13 acceptance (ingest and the right container): a two-container pod (app with the port, sidecar
// without); tp ingest -c sidecar writes the sidecar's environment, not the app's; without -c it fails
// naming both containers; tp intercept of the app's port hands out the app's environment; tp status and
// tp list show the ingest, tp leave ends it.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import { apply, ensureChart, freshNamespace, kubectl, rolloutStatus, tpOnWorkstation } from './kube.js';
import { afterSetup, clusterSuite } from './suite.js';
import { deployment, ECHO_PORT } from './workloads.js';

const NS = 'tp-e2e-ingest';
const LOCAL_PORT = 18095;

const { test, cluster } = await clusterSuite('ingest and the right container');

/** A value that needs quoting in every syntax: quotes, a dollar, a backslash and newlines. */
const TRICKY = `it's "x" $HOME \\n\nline 2\n`;

if (cluster) {
  const c = cluster;
  const scratch = '/tmp/tpk-e2e-ingest';
  const tp = tpOnWorkstation(c, scratch);
  let installedChart = false;

  const scenario = afterSetup(test, async () => {
    fs.rmSync(scratch, { recursive: true, force: true });
    fs.mkdirSync(scratch, { recursive: true });
    await freshNamespace(c, NS);
    const labels = { app: 'two' };
    await apply(
      c,
      [
        deployment('two', labels, {
          terminationGracePeriodSeconds: 2,
          containers: [
            {
              name: 'app',
              image: c.images.echo,
              env: [
                { name: 'PORT', value: String(ECHO_PORT) },
                { name: 'WHO', value: 'app' },
              ],
              ports: [{ name: 'http', containerPort: ECHO_PORT }],
              readinessProbe: { httpGet: { path: '/', port: ECHO_PORT }, periodSeconds: 2 },
            },
            {
              name: 'sidecar',
              image: c.images.shell,
              command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'],
              env: [
                { name: 'WHO', value: 'sidecar' },
                { name: 'TRICKY', value: TRICKY },
              ],
            },
          ],
        }),
      ],
      NS,
    );
    installedChart = await ensureChart(c, tp);
    await rolloutStatus(c, NS, 'two');
    await tp(['connect', '--no-vif']);
  });

  test.after(async () => {
    await tp(['quit'], { check: false }).catch(() => {});
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
    if (installedChart) await tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, string>;

  scenario('tp ingest without -c: refused, the message lists the containers', async () => {
    const r = await tp(['ingest', 'two', '-n', NS, '--env-json', `${scratch}/none.json`], { check: false });
    assert.is.not(r.code, 0);
    assert.match(r.stderr, /several containers \(app, sidecar\): choose one with -c CONTAINER/);
    assert.not.ok(fs.existsSync(`${scratch}/none.json`));
    const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as { intercepts: unknown[] };
    assert.equal(st.intercepts, [], 'nothing is left behind');
  });

  scenario("tp ingest -c sidecar: the sidecar's environment in every syntax, not the app's", async () => {
    const r = await tp([
      'ingest',
      'two',
      '-n',
      NS,
      '-c',
      'sidecar',
      '--env-json',
      `${scratch}/sidecar.json`,
      '--env-file',
      `${scratch}/sidecar.sh`,
      '--env-syntax',
      'sh',
    ]);
    assert.match(r.stdout, /Ingesting tp-e2e-ingest\/two container sidecar/);
    const env = readJson(`${scratch}/sidecar.json`);
    assert.is(env.WHO, 'sidecar');
    assert.is(env.TRICKY, TRICKY);
    assert.is(env.PORT, undefined, "the app's variables are not there");
    // The sh file gives a shell the same bytes.
    const out = execFileSync('sh', ['-c', `. ${scratch}/sidecar.sh; printf '%s' "$TRICKY"`], {
      encoding: 'utf8',
    });
    assert.is(out, TRICKY);
    assert.is(fs.statSync(`${scratch}/sidecar.sh`).mode & 0o777, 0o600);
  });

  scenario('tp status and tp list show the ingest; a second ingest of the app runs beside it', async () => {
    await tp([
      'ingest',
      'two',
      '-n',
      NS,
      '-c',
      'app',
      '--name',
      'two-app',
      '--env-json',
      `${scratch}/app.json`,
    ]);
    assert.is(readJson(`${scratch}/app.json`).WHO, 'app');
    const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as {
      intercepts: { name: string; kind: string; container: string; disposition: string }[];
    };
    assert.equal(
      st.intercepts
        .map((i) => [i.name, i.kind, i.container, i.disposition])
        .sort((a, b) => a[0]!.localeCompare(b[0]!)),
      [
        ['two', 'ingest', 'sidecar', 'ACTIVE'],
        ['two-app', 'ingest', 'app', 'ACTIVE'],
      ],
    );
    const text = (await tp(['status'])).stdout;
    assert.match(text, /Ingests:\n {2}two: ACTIVE {2}tp-e2e-ingest\/two container sidecar/);
    const list = (await tp(['list', '-n', NS])).stdout;
    assert.match(list, /ingest sidecar by \S+ \(ACTIVE\)/);
    assert.match(list, /ingest app by \S+ \(ACTIVE\)/);
  });

  scenario("tp intercept of the app's port: the app container's environment", async () => {
    const r = await tp([
      'intercept',
      'two',
      '-n',
      NS,
      '--name',
      'two-http',
      '--port',
      `${LOCAL_PORT}:${ECHO_PORT}`,
      '--env-json',
      `${scratch}/intercept.json`,
    ]);
    assert.match(r.stdout, /Intercepting/);
    const env = readJson(`${scratch}/intercept.json`);
    assert.is(env.WHO, 'app');
    assert.is(env.PORT, String(ECHO_PORT));
    await tp(['leave', 'two-http']);
  });

  scenario('tp leave ends one ingest, the other stays', async () => {
    await tp(['leave', 'two']);
    const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as { intercepts: { name: string }[] };
    assert.equal(
      st.intercepts.map((i) => i.name),
      ['two-app'],
    );
    await tp(['leave', 'two-app']);
  });

  scenario(
    "tp ingest -c sidecar -- COMMAND: the command sees the sidecar's environment (values byte for byte); tp exits with its status and the ingest is gone",
    async () => {
      const r = await tp(
        [
          'ingest',
          'two',
          '-c',
          'sidecar',
          '-n',
          NS,
          '--name',
          'two-run',
          '--',
          'sh',
          '-c',
          'printf "%s|%s" "$WHO" "$TRICKY" > "$0"; exit 7',
          `${scratch}/seen`,
        ],
        { check: false },
      );
      assert.is(r.code, 7, r.stderr);
      assert.match(r.stdout, /Ingesting tp-e2e-ingest\/two container sidecar/);
      assert.match(r.stderr, /sh exited \(status 7\); left ingest two-run/);
      assert.is(fs.readFileSync(`${scratch}/seen`, 'utf8'), `sidecar|${TRICKY}`);
      const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as {
        intercepts: { name: string }[];
      };
      assert.equal(st.intercepts, []);
    },
  );
}

test.run();
