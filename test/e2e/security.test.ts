// Issue 12 acceptance: the traffic manager authenticates and authorizes, enforcing by default, on a real
// cluster. The chart is installed in namespaced mode (two managed namespaces, A and B) with its defaults
// otherwise; two certificate users are minted the way an admin does it (CSR, approve, kubeconfig):
// alice may work in A only, bob in A and B. tp runs on the workstation with each user's kubeconfig. A pod
// with no credentials talks raw gRPC to the manager's Service. The NetworkPolicy is not enforced on the lab
// (bridge CNI); what is asserted here does not depend on it (kube/chart.test.ts checks its rendering).
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import { TunnelCode } from '../../rpc/gen/manager.js';
import {
  apply,
  type Background,
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
  tpOnWorkstation,
  waitFor,
} from './kube.js';
import {
  decodeTunnel,
  encode,
  parseRawResults,
  type RawCall,
  type RawResult,
  rawGrpcArgv,
} from './raw-grpc.js';
import { afterSetup, clusterSuite } from './suite.js';
import { type CertificateUser, certificateUser, removeCertificateUsers } from './users.js';
import { ECHO_PORT, echoDeployment, echoService } from './workloads.js';

const A = 'tp-e2e-sec-a';
const B = 'tp-e2e-sec-b';
const MANAGER = `traffic-manager.${MANAGER_NS}:8081`;
const AUDIENCE = `tp-manager.${MANAGER_NS}`;
const ALICE = 'tp-e2e-alice';
const BOB = 'tp-e2e-bob';
const ALICE_PORT = 18191;
const BOB_PORT = 18192;
const UNAUTHENTICATED = 16;

const { test, cluster } = await clusterSuite('security: an authenticated, authorized traffic manager');

if (cluster) {
  const c = cluster;
  const dir = `/tmp/tp-e2e-security`;
  let alice: CertificateUser;
  let bob: CertificateUser;
  let aliceTp: TpRunner;
  let bobTp: TpRunner;
  const admin = tpOnWorkstation(c, `${dir}/admin`);
  let installedHere = false;
  let upgradedHere = false;
  const apps: Background[] = [];

  const chartValues = [
    `managedNamespaces={${A},${B}}`,
    'clients.subjects[0].kind=User',
    `clients.subjects[0].name=${ALICE}`,
    'clients.subjects[1].kind=User',
    `clients.subjects[1].name=${BOB}`,
    'timeouts.clientSession=10s',
    'logLevel=debug',
  ].flatMap((v) => ['--set', v]);

  /** What a developer of a namespace may do there: work with workloads and port-forward, nothing more. */
  const developerRole = (namespace: string, users: string[]) => [
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: 'developer', namespace },
      rules: [
        {
          apiGroups: ['apps'],
          resources: ['deployments', 'replicasets', 'statefulsets'],
          verbs: ['get', 'list', 'watch', 'patch'],
        },
        { apiGroups: [''], resources: ['pods', 'services'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: [''], resources: ['pods/portforward'], verbs: ['create'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'developer', namespace },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'developer' },
      subjects: users.map((name) => ({ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name })),
    },
  ];

  /** A workstation app answering `body` on port. */
  const localApp = async (port: number, body: string) => {
    const app = startOnWorkstation(c, [
      process.execPath,
      '-e',
      `require('node:http').createServer((q, s) => s.end(${JSON.stringify(body)})).listen(${port}, '127.0.0.1', () => console.log('listening'))`,
    ]);
    apps.push(app);
    await app.waitForOutput(/listening/);
  };

  const curlEcho = async (namespace: string) => {
    const r = await execInPod(
      c,
      A,
      'client',
      ['curl', '-sS', '--max-time', '10', `http://echo.${namespace}.svc.cluster.local/`],
      { check: false },
    );
    return r.code === 0 ? r.stdout.trim() : `curl failed (exit ${r.code}): ${r.stderr.trim()}`;
  };

  /** Raw gRPC calls from the client pod in A, which holds no credential of any kind. */
  const fromPod = async (calls: RawCall[]): Promise<Map<string, RawResult>> => {
    const r = await execInPod(c, A, 'client', rawGrpcArgv(MANAGER, calls));
    const results = parseRawResults(r.stdout);
    for (const call of calls)
      assert.ok(results.has(call.name), `an answer to ${call.name}: ${r.stdout} ${r.stderr}`);
    return results;
  };

  const sessionIdOf = async (tp: TpRunner) =>
    (JSON.parse((await tp(['status', '-o', 'json'])).stdout) as { sessionId: string }).sessionId;

  const scenario = afterSetup(test, async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await freshNamespace(c, A);
    await freshNamespace(c, B);
    alice = await certificateUser(c, ALICE, dir);
    bob = await certificateUser(c, BOB, dir);
    aliceTp = tpOnWorkstation(c, `${dir}/alice`, { KUBECONFIG: alice.workstationKubeconfig });
    bobTp = tpOnWorkstation(c, `${dir}/bob`, { KUBECONFIG: bob.workstationKubeconfig });
    await apply(
      c,
      [
        ...developerRole(A, [ALICE, BOB]),
        echoDeployment(c, 'echo', 1),
        echoService(),
        echoDeployment(c, 'other', 1),
      ],
      A,
    );
    await apply(c, [...developerRole(B, [BOB]), echoDeployment(c, 'echo', 1), echoService()], B);
    await startClientPod(c, A);
    // The label the chart's NetworkPolicy lets through to the gRPC port: anyone who may create pods can
    // set it, so the policy is a second line only, and the refusals below must come from authentication
    // (also on a cluster whose CNI enforces the policy).
    await kubectl(c, ['label', 'pod', 'client', '-n', A, 'tp.dev/agent=injected']);
    for (const [ns, d] of [
      [A, 'echo'],
      [A, 'other'],
      [B, 'echo'],
    ] as const)
      await rolloutStatus(c, ns, d);
    const install = await admin(['helm', 'install', ...chartValues], { check: false, timeoutMs: 360_000 });
    if (install.code === 0) installedHere = true;
    else if (/already installed/.test(install.stderr)) {
      await admin(['helm', 'upgrade', ...chartValues], { timeoutMs: 360_000 });
      upgradedHere = true;
    } else throw new Error(`tp helm install failed: ${install.stderr.trim()}`);
    await kubectl(c, [
      'wait',
      '--for=condition=Available',
      `apiservice/v1alpha1.${MANAGER_NS}.sessions.tp.dev`,
      '--timeout=120s',
    ]);
    await localApp(ALICE_PORT, 'laptop-alice');
    await localApp(BOB_PORT, 'laptop-bob');
  });

  test.after(async () => {
    for (const tp of [aliceTp, bobTp, admin]) await tp?.(['quit'], { check: false }).catch(() => {});
    for (const app of apps) await app.stop();
    if (installedHere)
      await admin(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    // A release someone else installed goes back to managing every namespace.
    if (upgradedHere)
      await admin(['helm', 'upgrade', '--set', 'managedNamespaces=null', '--set', 'clients.subjects=null'], {
        check: false,
        timeoutMs: 300_000,
      }).catch(() => {});
    await kubectl(c, ['delete', 'namespace', A, B, '--ignore-not-found', '--wait=false'], { check: false });
    await removeCertificateUsers(c, [ALICE, BOB]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  scenario(
    'namespaced mode: the chart installs with its enforcing default and registers the session API',
    async () => {
      const deploy = await kubectlJson<{
        spec: { template: { spec: { containers: { env: { name: string; value?: string }[] }[] } } };
      }>(c, ['get', 'deployment', 'traffic-manager', '-n', MANAGER_NS]);
      const env = deploy.spec.template.spec.containers[0]!.env;
      assert.is(env.find((e) => e.name === 'TP_SECURITY_MODE')?.value, 'enforcing');
      assert.is(env.find((e) => e.name === 'TP_MANAGED_NAMESPACES')?.value, `${A},${B}`);
      // The manager's RBAC is namespaced: no cluster-wide workload access, yet it may review tokens and access.
      const can = async (verb: string, what: string, ns?: string) =>
        (
          await kubectl(
            c,
            [
              'auth',
              'can-i',
              verb,
              what,
              `--as=system:serviceaccount:${MANAGER_NS}:traffic-manager`,
              ...(ns ? ['-n', ns] : []),
            ],
            { check: false },
          )
        ).stdout.trim();
      assert.is(await can('patch', 'deployments', A), 'yes');
      assert.is(await can('patch', 'deployments', 'default'), 'no');
      assert.is(await can('create', 'subjectaccessreviews'), 'yes');
      assert.is(await can('create', 'tokenreviews'), 'yes');
      assert.is(await can('get', 'secrets', MANAGER_NS), 'no');
    },
  );

  scenario(
    'alice (RBAC in A only) intercepts in A, is refused in B naming the missing permission',
    async () => {
      const connect = await aliceTp(['connect', '-n', A]);
      assert.is(connect.code, 0, connect.stderr);
      const r = await aliceTp(['intercept', 'echo', '-n', A, '--port', `${ALICE_PORT}:${ECHO_PORT}`]);
      assert.is(r.code, 0, r.stderr);
      // The data path works with every hop authenticated: agent -> manager -> alice's workstation.
      await waitFor(
        'the echo Service in A answering from alice',
        async () => (await curlEcho(A)) === 'laptop-alice',
      );
      // Cluster DNS and an outbound flow through alice's VIF: the root daemon's calls carry her session's
      // credential (the Service answers from her laptop, since echo is intercepted).
      // (Retried: right after the rollout kube-proxy may still send the Service to the old pod.)
      let viaVif = '';
      await waitFor(
        `echo.${A} through alice's VIF answering from her laptop`,
        async () => {
          const r = await onWorkstation(
            c,
            ['curl', '-sS', '--max-time', '10', `http://echo.${A}.svc.cluster.local/`],
            { check: false },
          );
          viaVif = r.code === 0 ? r.stdout.trim() : r.stderr.trim();
          return viaVif === 'laptop-alice';
        },
        60_000,
      ).catch((e: Error) => {
        throw new Error(`${e.message}; the last answer: ${viaVif}`);
      });
      // Another name: her daemon would refuse a second intercept named "echo" before asking the manager.
      const b = await aliceTp(
        ['intercept', 'echo', '-n', B, '--name', 'echo-b', '--port', `${ALICE_PORT + 10}:${ECHO_PORT}`],
        { check: false },
      );
      assert.is.not(b.code, 0, 'refused in B');
      assert.ok(
        b.stderr.includes(
          `not allowed to intercept ${B}/echo: user ${ALICE} cannot patch deployments in ${B}`,
        ),
        b.stderr,
      );
      assert.not.match(b.stderr, /PERMISSION_DENIED|\d+ [A-Z_]+:/, 'a sentence, not a gRPC status dump');
      // And nothing was installed in B on her behalf.
      const pods = await kubectlJson<{ items: { spec: { containers: { name: string }[] } }[] }>(c, [
        'get',
        'pods',
        '-n',
        B,
        '-l',
        'app=echo',
      ]);
      assert.ok(
        pods.items.every((p) => !p.spec.containers.some((x) => x.name === 'tp-agent')),
        'no agent in B',
      );
    },
  );

  scenario("tp list as alice shows A's workloads and none of B's; bob sees both", async () => {
    const names = async (tp: TpRunner) =>
      (
        JSON.parse((await tp(['list', '-A', '-o', 'json'])).stdout) as {
          workloads: { namespace: string; name: string }[];
        }
      ).workloads
        .map((w) => `${w.namespace}/${w.name}`)
        .sort();
    assert.equal(await names(aliceTp), [`${A}/echo`, `${A}/other`]);
    const connect = await bobTp(['connect', '--no-vif', '-n', A]);
    assert.is(connect.code, 0, connect.stderr);
    assert.equal(await names(bobTp), [`${A}/echo`, `${A}/other`, `${B}/echo`]);
  });

  scenario("two users at once: neither can take over or leave the other's intercept", async () => {
    const take = await bobTp(['intercept', 'echo', '-n', A, '--port', `${BOB_PORT}:${ECHO_PORT}`], {
      check: false,
    });
    assert.is.not(take.code, 0);
    assert.match(take.stderr, `already intercepted by ${ALICE}@`);
    const leave = await bobTp(['leave', 'echo'], { check: false });
    assert.is.not(leave.code, 0);
    assert.is(await curlEcho(A), 'laptop-alice', "alice's intercept is untouched");
    // bob works where his RBAC lets him.
    const inB = await bobTp(['intercept', 'echo', '-n', B, '--port', `${BOB_PORT}:${ECHO_PORT}`]);
    assert.is(inB.code, 0, inB.stderr);
    await waitFor(
      'the echo Service in B answering from bob',
      async () => (await curlEcho(B)) === 'laptop-bob',
    );
    assert.is(await curlEcho(A), 'laptop-alice', 'and alice keeps hers');
  });

  scenario(
    'a pod with no credentials is refused: sessions, intercepts, agent registration, every tunnel dial',
    async () => {
      // Even knowing alice's real session id (others see it, e.g. in intercept ids) is not enough.
      const aliceSession = await sessionIdOf(aliceTp);
      assert.ok(aliceSession.startsWith('c-'));
      const echoPod = (await listPods(c, A, 'app=echo')).find((p) => !p.deleting)!;
      const service = await kubectlJson<{ spec: { clusterIP: string } }>(c, [
        'get',
        'service',
        'echo',
        '-n',
        A,
      ]);
      const results = await fromPod([
        {
          name: 'arrive-client',
          method: 'ArriveAsClient',
          messages: [encode.clientInfo('mallory@pod')],
          streaming: false,
        },
        {
          name: 'arrive-agent',
          method: 'ArriveAsAgent',
          messages: [
            encode.agentInfo({ name: 'echo', namespace: A, podName: echoPod.name, podIp: echoPod.ip }),
          ],
          streaming: false,
        },
        {
          name: 'create-intercept',
          method: 'CreateIntercept',
          messages: [
            encode.createIntercept(aliceSession, { workload: 'other', namespace: A, remotePort: ECHO_PORT }),
          ],
          streaming: false,
        },
        {
          name: 'watch-dial',
          method: 'WatchDial',
          messages: [encode.session(aliceSession)],
          streaming: true,
        },
        { name: 'depart', method: 'Depart', messages: [encode.session(aliceSession)], streaming: false },
        ...[
          ['tunnel-no-session', { sessionId: '', dstIp: service.spec.clusterIP, dstPort: 80 }],
          ['tunnel-outbound', { sessionId: aliceSession, dstIp: service.spec.clusterIP, dstPort: 80 }],
          [
            'tunnel-intercepted',
            {
              sessionId: aliceSession,
              dstIp: echoPod.ip,
              dstPort: ECHO_PORT,
              interceptId: `${aliceSession}:echo`,
            },
          ],
          [
            'tunnel-relay',
            { sessionId: aliceSession, dstIp: '127.0.0.1', dstPort: ALICE_PORT, relayId: 'r-1' },
          ],
        ].map(([name, open]) => ({
          name: name as string,
          method: 'Tunnel',
          messages: [encode.tunnelOpen(open as Parameters<typeof encode.tunnelOpen>[0])],
          streaming: true,
        })),
      ]);
      const refusedWith = (name: string, status: number, text: string) => {
        const r = results.get(name)!;
        assert.is(r.status, status, `${name}: ${JSON.stringify(r)}`);
        assert.match(r.message, text, name);
      };
      refusedWith('arrive-client', UNAUTHENTICATED, 'cannot start a client session: no identity token');
      refusedWith('arrive-agent', UNAUTHENTICATED, 'the agent presented no ServiceAccount token');
      refusedWith(
        'create-intercept',
        UNAUTHENTICATED,
        'CreateIntercept refused: the call carries no session credential',
      );
      refusedWith('watch-dial', UNAUTHENTICATED, 'WatchDial refused');
      refusedWith('depart', UNAUTHENTICATED, 'Depart refused');
      for (const name of ['tunnel-no-session', 'tunnel-outbound', 'tunnel-intercepted', 'tunnel-relay']) {
        const r = results.get(name)!;
        assert.ok(r.messages.length > 0, `${name}: an answer on the stream: ${JSON.stringify(r)}`);
        const first = decodeTunnel(r.messages[0]!);
        assert.is(first.code, TunnelCode.DIAL_REJECT, `${name}: ${first.error}`);
        assert.ok(first.error !== '', name);
      }
      assert.match(
        decodeTunnel(results.get('tunnel-outbound')!.messages[0]!).error,
        'carries no session credential',
      );
      // alice's session survived all of it.
      assert.is(await curlEcho(A), 'laptop-alice');
      assert.is(await sessionIdOf(aliceTp), aliceSession);
    },
  );

  scenario("an agent whose token belongs to another workload's pod is refused", async () => {
    const echoPod = (await listPods(c, A, 'app=echo')).find((p) => !p.deleting)!;
    const otherPod = (
      await kubectlJson<{
        items: {
          metadata: { name: string; uid: string; deletionTimestamp?: string };
          status: { podIP: string };
        }[];
      }>(c, ['get', 'pods', '-n', A, '-l', 'app=other'])
    ).items.find((p) => !p.metadata.deletionTimestamp)!;
    // A real token bound to the other workload's pod, for the manager's audience: what stealing an agent's token gets.
    const token = (
      await kubectl(c, [
        'create',
        'token',
        'default',
        '-n',
        A,
        '--audience',
        AUDIENCE,
        '--bound-object-kind',
        'Pod',
        '--bound-object-name',
        otherPod.metadata.name,
        '--bound-object-uid',
        otherPod.metadata.uid,
        '--duration',
        '10m',
      ])
    ).stdout.trim();
    const results = await fromPod([
      {
        name: 'claims-echo-pod',
        method: 'ArriveAsAgent',
        messages: [
          encode.agentInfo({ name: 'echo', namespace: A, podName: echoPod.name, podIp: echoPod.ip }),
        ],
        streaming: false,
        token,
      },
      {
        name: 'claims-echo-workload',
        method: 'ArriveAsAgent',
        messages: [
          encode.agentInfo({
            name: 'echo',
            namespace: A,
            podName: otherPod.metadata.name,
            podIp: otherPod.status.podIP,
          }),
        ],
        streaming: false,
        token,
      },
      {
        name: 'wrong-audience',
        method: 'ArriveAsAgent',
        messages: [
          encode.agentInfo({
            name: 'other',
            namespace: A,
            podName: otherPod.metadata.name,
            podIp: otherPod.status.podIP,
          }),
        ],
        streaming: false,
        token: (await kubectl(c, ['create', 'token', 'default', '-n', A])).stdout.trim(),
      },
    ]);
    const r1 = results.get('claims-echo-pod')!;
    assert.is(r1.status, UNAUTHENTICATED, JSON.stringify(r1));
    assert.match(r1.message, `its token belongs to pod ${otherPod.metadata.name}, not ${echoPod.name}`);
    const r2 = results.get('claims-echo-workload')!;
    assert.is(r2.status, UNAUTHENTICATED, JSON.stringify(r2));
    assert.match(
      r2.message,
      `pod ${otherPod.metadata.name} belongs to Deployment other, not Deployment echo`,
    );
    const r3 = results.get('wrong-audience')!;
    assert.is(r3.status, UNAUTHENTICATED, JSON.stringify(r3));
    assert.match(r3.message, `not valid for audience ${AUDIENCE}`);
    // The injected agents, with their own tokens, are connected: the intercept still works.
    assert.is(await curlEcho(A), 'laptop-alice');
  });

  scenario('leaving ends only your own; then the other user may take the workload', async () => {
    const left = await aliceTp(['leave', 'echo']);
    assert.is(left.code, 0, left.stderr);
    await waitFor('echo in A answering from the app again', async () =>
      (await curlEcho(A)).startsWith('echo-'),
    );
    assert.is(await curlEcho(B), 'laptop-bob', "bob's intercept in B is still there");
    const take = await bobTp([
      'intercept',
      'echo',
      '-n',
      A,
      '--name',
      'echo-a',
      '--port',
      `${BOB_PORT}:${ECHO_PORT}`,
    ]);
    assert.is(take.code, 0, take.stderr);
    await waitFor('echo in A answering from bob', async () => (await curlEcho(A)) === 'laptop-bob');
    const refused = await kubectl(c, ['logs', '-n', MANAGER_NS, 'deploy/traffic-manager'], { check: false });
    assert.match(refused.stdout, 'refused', 'the manager logs its refusals');
    assert.not.match(refused.stdout, 'permissive: would refuse', 'enforcing, not permissive');
  });

  scenario(
    "ending others' intercepts is an admin's action: alice may not, the cluster admin may",
    async () => {
      const refused = await aliceTp(['revoke', 'echo', '-n', A], { check: false });
      assert.is.not(refused.code, 0);
      assert.ok(
        refused.stderr.includes(
          `not allowed to end other users' intercepts of ${A}/echo: user ${ALICE} cannot delete intercepts.tp.dev in ${A}`,
        ),
        refused.stderr,
      );
      assert.is(await curlEcho(A), 'laptop-bob');
      const connect = await admin(['connect', '--no-vif']);
      assert.is(connect.code, 0, connect.stderr);
      const revoked = await admin(['revoke', 'echo', '-n', A]);
      assert.match(revoked.stdout, `Revoked intercept echo-a of ${BOB}@`);
      await waitFor('echo in A answering from the app again', async () =>
        (await curlEcho(A)).startsWith('echo-'),
      );
      assert.is(await curlEcho(B), 'laptop-bob', 'only what was revoked is gone');
      const st = JSON.parse((await bobTp(['status', '-o', 'json'])).stdout) as {
        intercepts: { name: string; disposition: string; message: string }[];
      };
      const gone = st.intercepts.find((i) => i.name === 'echo-a');
      assert.match(gone?.message ?? '', 'revoked', JSON.stringify(st.intercepts));
    },
  );

  scenario(
    'a user who may port-forward to the manager but not create sessiontokens gets no session',
    async () => {
      const carol = await certificateUser(c, 'tp-e2e-carol', dir);
      const binding = {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'tp-e2e-carol', namespace: MANAGER_NS },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'tp-client' },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'tp-e2e-carol' }],
      };
      const carolTp = tpOnWorkstation(c, `${dir}/carol`, { KUBECONFIG: carol.workstationKubeconfig });
      try {
        await apply(c, [binding]);
        const r = await carolTp(['connect', '--no-vif', '-n', A], { check: false });
        assert.is.not(r.code, 0);
        assert.match(r.stderr, 'may not create sessiontokens');
        assert.match(r.stderr, 'clients.subjects');
      } finally {
        await carolTp(['quit'], { check: false });
        await kubectl(c, ['delete', 'rolebinding', 'tp-e2e-carol', '-n', MANAGER_NS, '--ignore-not-found'], {
          check: false,
        });
        await removeCertificateUsers(c, ['tp-e2e-carol']);
      }
    },
  );
}

test.run();
