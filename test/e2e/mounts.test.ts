// Issue 13 acceptance (remote mounts): an app container that mounts a ConfigMap, a Secret, the
// service-account token and an emptyDir; `tp intercept … --mount=DIR` shows the same bytes under DIR
// (read-only), TP_ROOT in the env file, tp status and tp list show DIR (ro); the manager pod deleted, the
// mount comes back by itself; `tp leave` unmounts and leaves DIR empty; `tp ingest … --mount=DIR:rw`
// writes into the emptyDir (the app container reads it) and not into the ConfigMap; a raw SFTP client in
// sshfs's place (testbed/sftp-probe.ts) is refused `..`, absolute paths, /proc and symlinks; after
// kill -9 of the user daemon the next `tp connect` removes what was left; the agent's memory with the
// file server idle stays in its budget. (That another session cannot mount these volumes is checked
// against the manager in manager.test.ts.)
//
// The workstation's commands run in private mount namespaces (`tp-lab exec`, lab/workstation.ts): the
// user daemon's mounts live in its namespace, so the checks look there (nsenter --mount).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { FX } from '../../agent/sftp-filter.js';
import { waitFor } from '../../command/wait.js';
import { runCommand } from '../../lab/command.js';
import { ESCAPES, type ProbeAnswer } from '../../testbed/sftp-probe.js';
import { repoRoot } from './cluster.js';
import {
  apply,
  deleteManagerPods,
  ensureChart,
  execInPod,
  freshNamespace,
  kubectl,
  kubectlJson,
  listPods,
  onWorkstation,
  rolloutStatus,
  tpOnWorkstation,
} from './kube.js';
import { afterSetup, clusterSuite } from './suite.js';
import { deployment, ECHO_PORT } from './workloads.js';

const NS = 'tp-e2e-mounts';
const LOCAL_PORT = 18096;
/** --local-mount-port. */
const SFTP_PORT = 18097;
const TOKEN_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const CONFIG = 'a: 1\nb: "two"\n';
const PASSWORD = Buffer.from([0, 1, 2, 255, 10, 39, 34]);
/** The chart's agent.resources.limits.memory (in Mi). */
const AGENT_MEMORY_LIMIT = (() => {
  const values = parse(fs.readFileSync(path.join(repoRoot, 'charts', 'tp', 'values.yaml'), 'utf8')) as {
    agent: { resources: { limits: { memory: string } } };
  };
  const m = /^(\d+)Mi$/.exec(values.agent.resources.limits.memory);
  if (!m)
    throw new Error(`the chart's agent memory limit is not in Mi: ${values.agent.resources.limits.memory}`);
  return Number(m[1]) * 1024 * 1024;
})();

const { test, cluster } = await clusterSuite('remote mounts');

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

if (cluster) {
  const c = cluster;
  const scratch = '/tmp/tpk-e2e-mounts';
  const mnt = path.join(scratch, 'mnt');
  const mntRw = path.join(scratch, 'mnt-rw');
  const tp = tpOnWorkstation(c, scratch);
  // A second workstation session whose "sshfs" is the raw SFTP probe (test/e2e/README.md: its own run dir).
  const probeScratch = path.join(scratch, 'probe');
  const probeResult = path.join(probeScratch, 'answers.json');
  const tpProbe = tpOnWorkstation(c, probeScratch, {
    PATH: `${path.join(probeScratch, 'bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`,
  });
  let installedChart = false;

  /** The user daemon's pid; when it does not answer, its log says why. */
  const daemonPid = async () => {
    const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as {
      state: string;
      daemon?: { pid: number };
    };
    if (st.daemon) return st.daemon.pid;
    const logFile = path.join(scratch, 'logs', 'connector.log');
    const tail = fs.existsSync(logFile)
      ? fs.readFileSync(logFile, 'utf8').split('\n').slice(-40).join('\n')
      : '(no log)';
    throw new Error(`the user daemon does not answer (${st.state}); its log:\n${tail}`);
  };
  /** A command in the user daemon's mount namespace. */
  const inDaemonNs = (pid: number, argv: string[]) =>
    runCommand(['nsenter', `--mount=/proc/${pid}/ns/mnt`, '--', ...argv], {
      check: false,
      timeoutMs: 20_000,
    });
  const mountedIn = async (pid: number, dir: string) =>
    (await inDaemonNs(pid, ['cat', '/proc/self/mountinfo'])).stdout
      .split('\n')
      .some((l) => l.split(' ')[4] === dir);
  /** Every mount namespace on the host: does any still hold `dir`? */
  const mountedAnywhere = (dir: string) =>
    fs.readdirSync('/proc').some((p) => {
      if (!/^\d+$/.test(p)) return false;
      try {
        return fs
          .readFileSync(`/proc/${p}/mountinfo`, 'utf8')
          .split('\n')
          .some((l) => l.split(' ')[4] === dir);
      } catch {
        return false;
      }
    });
  const agentRestarts = async () => {
    const pod = await kubectlJson<{
      status: { containerStatuses: { name: string; restartCount: number }[] };
    }>(c, ['get', 'pod', await agentPod(), '-n', NS]);
    return pod.status.containerStatuses.find((s) => s.name === 'tp-agent')?.restartCount ?? -1;
  };
  /** tp intercept of the app's port, with `flags`. */
  const interceptVol = (...flags: string[]) =>
    tp(['intercept', 'vol', '-n', NS, '--port', `${LOCAL_PORT}:${ECHO_PORT}`, ...flags]);
  const agentPod = async () => (await listPods(c, NS, 'app=vol')).find((p) => p.ready && !p.deleting)!.name;

  const scenario = afterSetup(test, async () => {
    fs.rmSync(scratch, { recursive: true, force: true });
    fs.mkdirSync(mnt, { recursive: true });
    fs.mkdirSync(path.join(probeScratch, 'bin'), { recursive: true });
    const probe = path.join(repoRoot, 'dist', 'testbed', 'sftp-probe.js');
    fs.writeFileSync(
      path.join(probeScratch, 'bin', 'sshfs'),
      `#!/bin/sh\nexec ${process.execPath} ${probe} ${probeResult} etc/cfg/config.yaml\n`,
      { mode: 0o755 },
    );
    await freshNamespace(c, NS);
    const labels = { app: 'vol' };
    await apply(
      c,
      [
        { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cfg' }, data: { 'config.yaml': CONFIG } },
        {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: { name: 'sec' },
          data: { password: PASSWORD.toString('base64') },
        },
        deployment('vol', labels, {
          terminationGracePeriodSeconds: 2,
          volumes: [
            { name: 'cfg', configMap: { name: 'cfg' } },
            { name: 'sec', secret: { secretName: 'sec' } },
            { name: 'scratch', emptyDir: {} },
          ],
          containers: [
            {
              name: 'app',
              image: c.images.echo,
              env: [{ name: 'PORT', value: String(ECHO_PORT) }],
              ports: [{ name: 'http', containerPort: ECHO_PORT }],
              readinessProbe: { httpGet: { path: '/', port: ECHO_PORT }, periodSeconds: 2 },
              volumeMounts: [
                { name: 'cfg', mountPath: '/etc/cfg' },
                { name: 'sec', mountPath: '/etc/sec', readOnly: true },
                { name: 'scratch', mountPath: '/data' },
              ],
            },
          ],
        }),
      ],
      NS,
    );
    installedChart = await ensureChart(c, tp);
    await rolloutStatus(c, NS, 'vol');
    await tp(['connect', '--no-vif']);
  });

  test.after(async () => {
    await tpProbe(['quit'], { check: false }).catch(() => {});
    await tp(['quit'], { check: false }).catch(() => {});
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
    if (installedChart) await tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  scenario(
    'tp intercept --mount=DIR: the ConfigMap, the Secret and the token, byte for byte, read-only',
    async () => {
      const r = await interceptVol(`--mount=${mnt}`, '--env-json', `${scratch}/env.json`);
      assert.match(r.stdout, `Volumes mounted read-only at ${mnt} (TP_ROOT)`);
      const env = JSON.parse(fs.readFileSync(`${scratch}/env.json`, 'utf8')) as Record<string, string>;
      assert.is(env.TP_ROOT, mnt);
      const pid = await daemonPid();
      assert.ok(await mountedIn(pid, mnt));
      const hashOf = async (file: string) => {
        const h = await inDaemonNs(pid, ['sha256sum', path.join(mnt, file)]);
        assert.is(h.code, 0, h.stderr);
        return h.stdout.split(' ')[0];
      };
      assert.is(await hashOf('etc/cfg/config.yaml'), sha256(CONFIG));
      assert.is(await hashOf('etc/sec/password'), sha256(PASSWORD));
      const ns = await inDaemonNs(pid, ['cat', path.join(mnt, TOKEN_DIR, 'namespace')]);
      assert.is(ns.stdout, NS);
      // The token the kubelet projected into the pod (the agent container sees the same volume).
      const token = await execInPod(c, NS, await agentPod(), ['cat', `/tp/mounts/app${TOKEN_DIR}/token`], {
        container: 'tp-agent',
      });
      assert.ok(token.stdout.length > 100);
      assert.is(await hashOf(`${TOKEN_DIR.slice(1)}/token`), sha256(token.stdout));
      const write = await inDaemonNs(pid, ['sh', '-c', `echo x > ${mnt}/etc/cfg/new`]);
      assert.is.not(write.code, 0);
      assert.match(write.stderr, /Read-only file system/);
    },
  );

  scenario(
    'the agent did not restart, and its memory with the file server idle stays within its budget',
    async () => {
      const pod = await agentPod();
      const restarts = await agentRestarts();
      if (restarts !== 0) {
        const prev = await kubectl(c, ['logs', '-n', NS, pod, '-c', 'tp-agent', '--previous', '--tail=40'], {
          check: false,
        });
        assert.unreachable(
          `tp-agent restarted ${restarts} time(s); its previous log:\n${prev.stdout}${prev.stderr}`,
        );
      }
      // cgroup v2 (memory.current) or v1 (memory.usage_in_bytes): the container's charge, sftp-servers included.
      const cg = await execInPod(
        c,
        NS,
        pod,
        [
          'sh',
          '-c',
          'cat /sys/fs/cgroup/memory.current 2>/dev/null || cat /sys/fs/cgroup/memory/memory.usage_in_bytes',
        ],
        { container: 'tp-agent' },
      );
      const rss = await execInPod(
        c,
        NS,
        pod,
        ['sh', '-c', 'for f in /proc/[0-9]*/status; do grep -H -e VmRSS -e Name $f; done'],
        { container: 'tp-agent', check: false },
      );
      const bytes = Number(cg.stdout.trim());
      process.stdout.write(
        `# agent, a mount open and idle: container memory ${(bytes / 2 ** 20).toFixed(1)} MiB; ${rss.stdout.trim().replace(/\n/g, '; ')}\n`,
      );
      assert.ok(bytes > 0 && bytes < AGENT_MEMORY_LIMIT, `${bytes} bytes`);
    },
  );

  /** This session's intercept or ingest `name` as tp status -o json shows it. */
  const statusOf = async (name: string) => {
    const st = JSON.parse((await tp(['status', '-o', 'json'])).stdout) as {
      intercepts: {
        name: string;
        disposition: string;
        mount: { mountPoint: string; access: string } | null;
      }[];
    };
    return st.intercepts.find((i) => i.name === name);
  };

  scenario('tp status and tp list show the mount point, read-only', async () => {
    assert.equal((await statusOf('vol'))?.mount, { mountPoint: mnt, access: 'ro', localMountPort: 0 });
    assert.match((await tp(['status'])).stdout, `volumes at ${mnt} (ro)`);
    assert.match((await tp(['list', '-n', NS])).stdout, `volumes at ${mnt} (ro)`);
    const yaml = (await tp(['list', '-n', NS, '-o', 'yaml'])).stdout;
    assert.match(yaml, `mountPoint: ${mnt}`);
  });

  // The worker's sftp-server outlives it briefly (its flow is gone) and is adopted by PID 1, the holder,
  // which must reap it (agent/reaper.ts). The next scenario waits for the mount to come back.
  scenario('kill -9 of the agent worker: its sftp-server is reaped, no zombie in the container', async () => {
    const pod = await agentPod();
    const inAgent = (script: string) =>
      execInPod(c, NS, pod, ['sh', '-c', script], { container: 'tp-agent', check: false });
    /** pid, name and state of every process in the container named `name` (every one for ""). */
    const processes = async (name = '') =>
      (await inAgent('cat /proc/[0-9]*/stat 2>/dev/null')).stdout
        .split('\n')
        .map((l) => /^(\d+) \((.*)\) (\S)/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null && (name === '' || m[2] === name))
        .map((m) => ({ pid: Number(m[1]), name: m[2]!, state: m[3]! }));
    const [worker] = await processes('tp-agent');
    const sftp = await processes('sftp-server');
    assert.ok(worker, 'the worker runs');
    assert.ok(sftp.length > 0, 'a mount is served by an sftp-server');
    await inAgent(`kill -9 ${worker!.pid}`);
    let seen = '';
    await waitFor(
      () => `the old sftp-server gone and no zombie (last: ${seen})`,
      async () => {
        const now = await processes();
        seen = now.map((p) => `${p.pid} ${p.name} ${p.state}`).join(', ');
        return now.every((p) => p.state !== 'Z') && sftp.every((old) => !now.some((p) => p.pid === old.pid));
      },
      30_000,
      500,
    );
    assert.is(await agentRestarts(), 0, 'the holder kept the container');
  });

  scenario('the manager pod deleted: the mount comes back by itself, the same files readable', async () => {
    const pid = await daemonPid();
    await deleteManagerPods(c);
    let last = '';
    await waitFor(
      () => `the config file through the mount again (last: ${last})`,
      async () => {
        const r = await inDaemonNs(pid, ['sha256sum', path.join(mnt, 'etc/cfg/config.yaml')]);
        last = r.code === 0 ? r.stdout.split(' ')[0]! : r.stderr.trim();
        return r.code === 0 && last === sha256(CONFIG);
      },
      240_000,
      2_000,
    );
    assert.equal((await statusOf('vol'))?.mount, { mountPoint: mnt, access: 'ro', localMountPort: 0 });
  });

  scenario('tp leave: unmounted, the mount point empty', async () => {
    const pid = await daemonPid();
    await tp(['leave', 'vol']);
    assert.not.ok(await mountedIn(pid, mnt));
    assert.equal(fs.readdirSync(mnt), []);
  });

  scenario(
    'tp intercept --local-mount-port: the volumes as SFTP on 127.0.0.1 for sshfs -o directport, read-only; the port closes on tp leave',
    async () => {
      const r = await interceptVol('--local-mount-port', String(SFTP_PORT));
      assert.match(
        r.stdout,
        `Volumes served read-only over SFTP on 127.0.0.1:${SFTP_PORT}: mount them with e.g. sshfs -o directport=${SFTP_PORT} localhost: DIR`,
      );
      try {
        assert.equal((await statusOf('vol'))?.mount, {
          mountPoint: '',
          access: 'ro',
          localMountPort: SFTP_PORT,
        });
        assert.match((await tp(['status'])).stdout, `volumes over SFTP on 127.0.0.1:${SFTP_PORT} (ro)`);
        // The port taken: an ingest asking for it is refused, naming it, and leaves no ingest behind.
        const taken = await tp(
          [
            'ingest',
            'vol',
            '-n',
            NS,
            '-c',
            'app',
            '--name',
            'vol-files',
            '--local-mount-port',
            String(SFTP_PORT),
          ],
          { check: false },
        );
        assert.is.not(taken.code, 0);
        assert.match(taken.stderr, `127.0.0.1:${SFTP_PORT} is in use: choose another --local-mount-port`);
        assert.is(await statusOf('vol-files'), undefined);
        // The user's own mounter, as the output says. Each command on the workstation has a mount namespace
        // of its own, so one shell mounts, reads, tries a write and unmounts.
        const own = path.join(scratch, 'own');
        fs.mkdirSync(own, { recursive: true });
        const mounter = await onWorkstation(
          c,
          [
            'sh',
            '-c',
            `sshfs -o directport=${SFTP_PORT},follow_symlinks localhost: ${own} || exit 9
sha256sum ${own}/etc/cfg/config.yaml
echo x > ${own}/etc/cfg/new; echo "write exit $?"
fusermount -u ${own}`,
          ],
          { check: false },
        );
        assert.is(mounter.code, 0, `${mounter.stdout}${mounter.stderr}`);
        assert.match(mounter.stdout, sha256(CONFIG));
        assert.match(mounter.stdout, /write exit [1-9]/);
      } finally {
        await tp(['leave', 'vol'], { check: false });
      }
      const probe = await onWorkstation(c, [
        process.execPath,
        '-e',
        `require('node:net').connect(${SFTP_PORT}, '127.0.0.1').on('connect', () => { console.log('open'); process.exit(0); }).on('error', (e) => console.log(e.code));`,
      ]);
      assert.is(probe.stdout.trim(), 'ECONNREFUSED');
    },
  );

  scenario(
    'tp ingest --mount=DIR:rw: a file written on the workstation is in the app container; the ConfigMap refuses',
    async () => {
      const r = await tp(['ingest', 'vol', '-n', NS, '-c', 'app', `--mount=${mntRw}:rw`]);
      assert.match(r.stdout, `Volumes mounted read-write (where the volume allows it) at ${mntRw}`);
      const pid = await daemonPid();
      try {
        const write = await inDaemonNs(pid, ['sh', '-c', `echo from-the-workstation > ${mntRw}/data/hello`]);
        assert.is(write.code, 0, write.stderr);
        // The echo image has node and no coreutils.
        const read = await execInPod(
          c,
          NS,
          await agentPod(),
          ['node', '-e', "process.stdout.write(require('fs').readFileSync('/data/hello', 'utf8'))"],
          { container: 'app' },
        );
        assert.is(read.stdout, 'from-the-workstation\n');
        const cfg = await inDaemonNs(pid, ['sh', '-c', `echo x > ${mntRw}/etc/cfg/new`]);
        assert.is.not(cfg.code, 0);
        assert.match(cfg.stderr, /Permission denied/);
        assert.equal((await statusOf('vol'))?.mount, { mountPoint: mntRw, access: 'rw', localMountPort: 0 });
      } finally {
        await tp(['leave', 'vol'], { check: false });
      }
      assert.not.ok(await mountedIn(pid, mntRw));
    },
  );

  scenario(
    'an authenticated SFTP client is confined: `..`, absolute paths, /proc and symlinks out are refused',
    async () => {
      await tpProbe(['connect', '--no-vif']);
      // Its "sshfs" speaks raw SFTP, writes the answers and exits: the mount fails, by design.
      const r = await tpProbe(['ingest', 'vol', '-n', NS, '-c', 'app', '--mount'], { check: false });
      assert.is.not(r.code, 0);
      const answers = JSON.parse(fs.readFileSync(probeResult, 'utf8')) as ProbeAnswer[] | { error: string };
      assert.ok(Array.isArray(answers), JSON.stringify(answers));
      const list = answers as ProbeAnswer[];
      const byPath = (p: string) => list.find((a) => a.path === p);
      // The control: inside the volumes the same client is answered.
      assert.is(byPath('etc/cfg/config.yaml')?.kind, 'attrs', JSON.stringify(list));
      assert.is(byPath('.')?.kind, 'name');
      for (const e of ESCAPES.filter((q) => q.path !== '.')) {
        const a = byPath(e.path);
        assert.is(a?.kind, 'status', `${e.op} ${e.path}: ${JSON.stringify(a)}`);
        assert.is(a?.code, FX.PERMISSION_DENIED, `${e.op} ${e.path}: ${JSON.stringify(a)}`);
      }
      await tpProbe(['quit'], { check: false });
    },
  );

  scenario('kill -9 of the user daemon: the next tp connect removes the stale mount', async () => {
    await tp(['ingest', 'vol', '-n', NS, '-c', 'app', '--mount', '--env-json', `${scratch}/ingest.json`]);
    const dir = (JSON.parse(fs.readFileSync(`${scratch}/ingest.json`, 'utf8')) as Record<string, string>)
      .TP_ROOT!;
    assert.ok(dir && dir !== mnt, dir);
    const pid = await daemonPid();
    assert.ok(await mountedIn(pid, dir));
    const state = path.join(scratch, 'run', 'mounts.json');
    assert.ok(fs.existsSync(state), 'the daemon remembers its mounts');
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50 && fs.existsSync(`/proc/${pid}`); i++)
      await new Promise((res) => setTimeout(res, 100));
    await tp(['connect', '--no-vif']);
    assert.not.ok(fs.existsSync(state), 'the record is gone');
    assert.not.ok(fs.existsSync(dir), 'the mount point the daemon made is gone');
    assert.not.ok(mountedAnywhere(dir), 'no mount namespace holds it');
    // The dead daemon's flow was reset: the agent ends its sftp-server and lives on.
    assert.is(await agentRestarts(), 0);
  });
}

test.run();
