// A kind cluster from tp-kind's node image, and a workstation beside it: a network namespace of our own
// joined to the node by a veth pair created directly inside the two namespaces (the root namespace never
// holds it), with one route, to the API server. tp's CLI and daemons run there (`tp-kind exec`), as on
// a laptop outside the cluster; the VIF and the resolver file they change are the workstation's.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, stringify } from 'yaml';
import { waitFor } from '../command/wait.js';
import { cachedBinDir, ensureBinaries } from '../lab/binaries.js';
import { runCommand } from '../lab/command.js';
import { labExecArgv, WORKSTATION_RESOLV_CONF } from '../lab/workstation.js';
import { UsageError } from '../netaddr/parse.js';
import { dockerEnv, dockerLeftovers, ensureDocker, readDockerState, stopOwnDocker } from './docker.js';
import {
  binaryVersions,
  buildKindImages,
  type ComponentVersions,
  IMAGE_REPOSITORY,
  kubeadmImageTags,
} from './images.js';
import { ensureNodeImage } from './node-image.js';
import type { KindPaths } from './paths.js';

export const CLUSTER_NAME = 'tp-kind';
/** The docker network the node joins (made here, IPv4 only, so kind does not make its IPv6 one). */
export const NETWORK = 'tp-kind';
export const WORKSTATION_NETNS = 'tpkind-ws';
/** The veth pair: the node's end and the workstation's. */
export const NODE_VETH = 'tpkind-ws0';
export const WORKSTATION_VETH = 'tpkind-ws1';
export const NODE_VETH_ADDRESS = '172.30.9.1';
export const WORKSTATION_VETH_ADDRESS = '172.30.9.2';
export const POD_SUBNET = '10.244.0.0/16';
export const SERVICE_SUBNET = '10.96.0.0/16';
export const API_PORT = 6443;

/** kind's cluster configuration for the node image (pure): what the image needs kubeadm and containerd told. */
export function clusterConfig(v: ComponentVersions): string {
  const tags = kubeadmImageTags(v);
  return stringify({
    kind: 'Cluster',
    apiVersion: 'kind.x-k8s.io/v1alpha4',
    networking: { podSubnet: POD_SUBNET, serviceSubnet: SERVICE_SUBNET },
    // Hosts without CAP_SYS_RESOURCE cannot lower oom_score_adj: every sandbox fails without it.
    containerdConfigPatches: ['[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'],
    // The node's images are ours (tp-kind/…), and etcd's and CoreDNS's versions are ours too.
    kubeadmConfigPatches: [
      stringify({
        kind: 'ClusterConfiguration',
        imageRepository: IMAGE_REPOSITORY,
        etcd: { local: { imageTag: tags.etcd } },
        dns: { imageTag: tags.coredns },
      }),
    ],
    nodes: [{ role: 'control-plane' }],
  });
}

/** What test/e2e needs to run on this workstation (TP_E2E_WORKSTATION). */
export interface WorkstationDescription {
  prefix: string[];
  resolvConf: string;
  apiServer: { ip: string; dev: string };
}

/** The argv that runs `argv` on the workstation: its namespace, its resolv.conf, its kubeconfig and tools. */
export function workstationArgv(p: KindPaths, labBin: string, argv: string[]): string[] {
  return labExecArgv(
    WORKSTATION_NETNS,
    ['env', `KUBECONFIG=${p.wsKubeconfig}`, `PATH=${labBin}:${process.env.PATH ?? '/usr/bin:/bin'}`, ...argv],
    p.wsResolvConf,
  );
}

function kindBinDir(): string {
  return path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'kind');
}

/** kind/build.sh's bin dir (building what is missing). */
export async function ensureKindBinaries(progress: (line: string) => void): Promise<string> {
  const script = path.join(kindBinDir(), 'build.sh');
  const r = await runCommand(['bash', script], { check: false, timeoutMs: 30 * 60_000 });
  for (const line of r.stderr.trim().split('\n')) if (line) progress(line);
  if (r.code !== 0) throw new UsageError(`building kind's binaries failed (kind/build.sh exit ${r.code})`);
  return r.stdout.trim().split('\n').pop()!;
}

async function nodePid(env: NodeJS.ProcessEnv): Promise<number> {
  const r = await runCommand(
    ['docker', 'inspect', '--format', '{{.State.Pid}}', `${CLUSTER_NAME}-control-plane`],
    { env },
  );
  return Number(r.stdout.trim());
}

async function nodeIp(env: NodeJS.ProcessEnv): Promise<string> {
  const r = await runCommand(
    [
      'docker',
      'inspect',
      '--format',
      '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}',
      `${CLUSTER_NAME}-control-plane`,
    ],
    { env },
  );
  return r.stdout.trim();
}

async function setUpWorkstation(p: KindPaths, env: NodeJS.ProcessEnv, labBin: string): Promise<void> {
  const ip = await nodeIp(env);
  const pid = await nodePid(env);
  await runCommand(['ip', 'netns', 'delete', WORKSTATION_NETNS], { check: false });
  await runCommand(['ip', 'netns', 'add', WORKSTATION_NETNS]);
  const inWs = (args: string[]) => runCommand(['ip', '-n', WORKSTATION_NETNS, ...args]);
  const inNode = (args: string[]) => runCommand(['nsenter', `--net=/proc/${pid}/ns/net`, 'ip', ...args]);
  await inWs([
    'link',
    'add',
    WORKSTATION_VETH,
    'type',
    'veth',
    'peer',
    'name',
    NODE_VETH,
    'netns',
    String(pid),
  ]);
  await inWs(['link', 'set', 'lo', 'up']);
  await inWs(['addr', 'add', `${WORKSTATION_VETH_ADDRESS}/30`, 'dev', WORKSTATION_VETH]);
  await inWs(['link', 'set', WORKSTATION_VETH, 'up']);
  // One route: to the API server. Pods and Services are out of reach, as from a laptop.
  await inWs(['route', 'add', `${ip}/32`, 'via', NODE_VETH_ADDRESS, 'dev', WORKSTATION_VETH]);
  await inNode(['addr', 'add', `${NODE_VETH_ADDRESS}/30`, 'dev', NODE_VETH]);
  await inNode(['link', 'set', NODE_VETH, 'up']);
  fs.mkdirSync(path.dirname(p.wsResolvConf), { recursive: true });
  fs.writeFileSync(
    p.wsResolvConf,
    WORKSTATION_RESOLV_CONF.replaceAll('tp-lab exec', 'tp-kind exec').replace('tplab-ws', WORKSTATION_NETNS),
  );
  const internal = await runCommand(['kind', 'get', 'kubeconfig', '--internal', '--name', CLUSTER_NAME], {
    env,
  });
  const config = parse(internal.stdout) as { clusters: { cluster: { server: string } }[] };
  for (const c of config.clusters) c.cluster.server = `https://${ip}:${API_PORT}`;
  fs.writeFileSync(p.wsKubeconfig, stringify(config), { mode: 0o600 });
  const description: WorkstationDescription = {
    prefix: workstationArgv(p, labBin, []),
    resolvConf: p.wsResolvConf,
    apiServer: { ip, dev: WORKSTATION_VETH },
  };
  fs.writeFileSync(p.workstation, `${JSON.stringify(description, null, 2)}\n`);
}

export interface UpResult {
  kubeconfig: string;
  seconds: number;
}

/**
 * Builds what is missing (binaries, images, the node image), starts Docker if none runs, creates the
 * cluster, the workstation, and loads tp's image and the scenario images into the node.
 */
export async function kindUp(
  p: KindPaths,
  tpArchive: string,
  progress: (line: string) => void,
): Promise<UpResult> {
  const started = Date.now();
  const labBin = await ensureBinaries(progress);
  const kindBin = await ensureKindBinaries(progress);
  const versions: ComponentVersions = {
    kubernetes: await kubernetesVersion(labBin),
    ...(await binaryVersions(labBin)),
    localPath: await localPathVersion(),
  };
  if (!fs.existsSync(tpArchive))
    throw new UsageError(`${tpArchive} is missing: build tp's image first (npm run image)`);
  const images = await buildKindImages(p.images, { labBin, kindBin, versions }, progress);
  const docker = await ensureDocker(p, progress);
  const env = {
    ...dockerEnv(docker),
    PATH: `${kindBin}:${labBin}:${process.env.PATH ?? ''}`,
    KIND_EXPERIMENTAL_DOCKER_NETWORK: NETWORK,
  };
  const node = await ensureNodeImage({
    name: `${IMAGE_REPOSITORY}/node:${versions.kubernetes}`,
    kubernetesVersion: versions.kubernetes,
    labBin,
    filesDir: path.join(kindBinDir(), 'node'),
    images: images.node,
    cacheDir: p.cache,
    env,
    progress,
  });
  let exists = await hasCluster(env);
  if (exists) {
    const stale = docker.startedNow
      ? `it is left in Docker's data (${p.dockerData}) by an engine that stopped without \`tp-kind down\` (a crash, a reboot, a killed run), and its node restarted from that state`
      : await unhealthy(p.kubeconfig, labBin, env);
    if (stale) {
      progress(
        `tp-kind: the ${CLUSTER_NAME} cluster found is not used: ${stale}; deleting it to create it anew`,
      );
      await runCommand(['kind', 'delete', 'cluster', '--name', CLUSTER_NAME, '--kubeconfig', p.kubeconfig], {
        env,
        timeoutMs: 300_000,
      });
      exists = false;
    } else progress(`tp-kind: using the ${CLUSTER_NAME} cluster kept from an earlier \`tp-kind up\``);
  }
  if (!exists) {
    const networks = await runCommand(['docker', 'network', 'ls', '--format', '{{.Name}}'], { env });
    if (!networks.stdout.split('\n').includes(NETWORK))
      await runCommand(['docker', 'network', 'create', '--driver=bridge', NETWORK], { env });
    fs.mkdirSync(p.root, { recursive: true });
    fs.writeFileSync(p.clusterConfig, clusterConfig(versions));
    progress(`tp-kind: kind create cluster --name ${CLUSTER_NAME} --image ${node.name}...`);
    const create = await runCommand(
      [
        'kind',
        'create',
        'cluster',
        '--name',
        CLUSTER_NAME,
        '--image',
        node.name,
        '--config',
        p.clusterConfig,
        '--kubeconfig',
        p.kubeconfig,
        '--wait',
        '3m',
        '--retain',
      ],
      { env, check: false, timeoutMs: 10 * 60_000 },
    );
    if (create.code !== 0)
      throw new Error(
        `kind create cluster failed (exit ${create.code}):\n${(create.stderr || create.stdout).trim().split('\n').slice(-25).join('\n')}\n(the node is kept for inspection: docker exec -it ${CLUSTER_NAME}-control-plane journalctl; tp-kind down removes it)`,
      );
  }
  // A cluster kept from an earlier `up` may have lost its workstation (the namespace went with a reboot).
  if (!fs.existsSync(`/run/netns/${WORKSTATION_NETNS}`) || !fs.existsSync(p.workstation))
    await setUpWorkstation(p, env, labBin);
  for (const archive of [
    tpArchive,
    ...images.lab.filter((l) => l.key === 'echo' || l.key === 'shell').map((l) => l.archive),
  ]) {
    progress(`tp-kind: kind load image-archive ${path.basename(archive)}`);
    await runCommand(['kind', 'load', 'image-archive', archive, '--name', CLUSTER_NAME], {
      env,
      timeoutMs: 300_000,
    });
  }
  return { kubeconfig: p.kubeconfig, seconds: (Date.now() - started) / 1000 };
}

/**
 * Removes the cluster, the workstation namespace and the docker network, then stops the Docker engine if
 * tp-kind started it and checks that it left nothing; resolves to what was left (empty: nothing).
 */
export async function kindDown(p: KindPaths, progress: (line: string) => void): Promise<string[]> {
  const docker = readDockerState(p);
  await runCommand(['ip', 'netns', 'delete', WORKSTATION_NETNS], { check: false });
  if (docker) {
    const labBin = cachedBinDir();
    const kindBin = await ensureKindBinaries(progress).catch(() => '');
    const env = { ...dockerEnv(docker), PATH: `${kindBin}:${labBin}:${process.env.PATH ?? ''}` };
    progress(`tp-kind: kind delete cluster --name ${CLUSTER_NAME}`);
    await runCommand(['kind', 'delete', 'cluster', '--name', CLUSTER_NAME, '--kubeconfig', p.kubeconfig], {
      env,
      check: false,
      timeoutMs: 300_000,
    });
    await runCommand(['docker', 'network', 'rm', NETWORK], { env, check: false });
    await stopOwnDocker(p, docker, progress);
  }
  for (const f of [p.kubeconfig, p.wsKubeconfig, p.workstation, p.clusterConfig])
    fs.rmSync(f, { force: true });
  return docker?.ours ? await dockerLeftovers(p, docker) : [];
}

async function hasCluster(env: NodeJS.ProcessEnv): Promise<boolean> {
  const clusters = await runCommand(['kind', 'get', 'clusters'], { env });
  return clusters.stdout.split('\n').includes(CLUSTER_NAME);
}

/**
 * Why a cluster kept from an earlier `up` (Docker still running: TP_KIND_KEEP=1) cannot be used, or
 * undefined when its API server lets kind's admin do everything within a minute.
 */
async function unhealthy(
  kubeconfig: string,
  labBin: string,
  env: NodeJS.ProcessEnv,
): Promise<string | undefined> {
  if (!fs.existsSync(kubeconfig)) return `its kubeconfig ${kubeconfig} is gone`;
  const kubectl = path.join(labBin, 'kubectl');
  try {
    await waitFor(
      "kind's admin to be granted everything (kubectl auth can-i '*' '*')",
      async () => {
        const r = await runCommand(
          [kubectl, '--kubeconfig', kubeconfig, 'auth', 'can-i', '*', '*', '--all-namespaces'],
          { env, check: false, timeoutMs: 15_000 },
        );
        if (r.code === 0 && r.stdout.trim() === 'yes') return true;
        throw new Error((r.stderr || r.stdout).trim().split('\n').slice(-1)[0] || 'no answer');
      },
      60_000,
      2_000,
    );
    return undefined;
  } catch (e) {
    return `its API server did not grant its admin everything: ${(e as Error).message}`;
  }
}

async function kubernetesVersion(labBin: string): Promise<string> {
  const r = await runCommand([path.join(labBin, 'kubeadm'), 'version', '-o', 'short']);
  return r.stdout.trim();
}

async function localPathVersion(): Promise<string> {
  const mod = fs.readFileSync(path.join(kindBinDir(), 'go', 'local-path', 'go.mod'), 'utf8');
  const v = /^require github\.com\/rancher\/local-path-provisioner (\S+)/m.exec(mod)?.[1];
  if (!v) throw new Error('kind/go/local-path/go.mod names no local-path-provisioner version');
  return v;
}
