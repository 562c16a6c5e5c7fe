// tp-kind's pure parts: kind's cluster configuration, the image names the node's files and kubeadm agree
// on, the runtime wrapper (run for real on a spec file with sh and sed) and the bounding-set parser.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse, parseAllDocuments } from 'yaml';
import { clusterConfig, POD_SUBNET, SERVICE_SUBNET, workstationArgv } from '../cluster.js';
import { capabilityFix, forwardPolicy, runtimeWrapper } from '../docker.js';
import {
  IMAGE_REPOSITORY,
  kindImageSpecs,
  kubeadmImageTags,
  PAUSE_IMAGE,
  STORAGE_HELPER_IMAGE,
} from '../images.js';
import { kindPaths } from '../paths.js';

const versions = { kubernetes: 'v1.34.4', etcd: '3.5.35', coredns: '1.14.2', localPath: 'v0.0.30' };
const nodeFiles = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  '..',
  '..',
  '..',
  'kind',
  'node',
);

test('the cluster configuration: our images, our etcd and CoreDNS tags, restrict_oom_score_adj, the lab subnets', () => {
  const c = parse(clusterConfig(versions)) as {
    networking: { podSubnet: string; serviceSubnet: string };
    containerdConfigPatches: string[];
    kubeadmConfigPatches: string[];
    nodes: { role: string }[];
  };
  assert.equal(c.networking, { podSubnet: POD_SUBNET, serviceSubnet: SERVICE_SUBNET });
  assert.match(c.containerdConfigPatches[0]!, /restrict_oom_score_adj = true/);
  const kubeadm = parse(c.kubeadmConfigPatches[0]!) as Record<string, unknown>;
  assert.equal(kubeadm, {
    kind: 'ClusterConfiguration',
    imageRepository: IMAGE_REPOSITORY,
    etcd: { local: { imageTag: '3.5.35-0' } },
    dns: { imageTag: 'v1.14.2' },
  });
  assert.equal(c.nodes, [{ role: 'control-plane' }]);
});

test("etcd's tag stays below 3.6 for etcd 3.5 (kubeadm picks etcd's flags by it)", () => {
  assert.is(kubeadmImageTags(versions).etcd, '3.5.35-0');
  assert.is(kubeadmImageTags({ ...versions, etcd: '3.6.5' }).etcd, '3.6.5-0');
});

test('the images kubeadm will ask for, with imageRepository tp-kind, are the ones built', () => {
  const names = kindImageSpecs({
    labBin: '/lab',
    kindBin: '/kind',
    versions,
    triplet: 'x86_64-linux-gnu',
  }).map((s) => s.name);
  for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'])
    assert.ok(names.includes(`tp-kind/${c}:v1.34.4`), c);
  assert.ok(names.includes('tp-kind/etcd:3.5.35-0'));
  assert.ok(names.includes(STORAGE_HELPER_IMAGE));
});

test("the node's files name the images that are built: sandbox, storage provisioner and helper", () => {
  const containerd = fs.readFileSync(path.join(nodeFiles, 'etc', 'containerd', 'config.toml'), 'utf8');
  assert.match(containerd, new RegExp(`sandbox_image = "${PAUSE_IMAGE}"`));
  const docs = parseAllDocuments(
    fs.readFileSync(path.join(nodeFiles, 'kind', 'manifests', 'default-storage.yaml'), 'utf8'),
  ).map((d) => d.toJSON() as { kind: string; spec?: unknown; data?: Record<string, string> });
  const text = JSON.stringify(docs);
  const built = kindImageSpecs({
    labBin: '/lab',
    kindBin: '/kind',
    versions,
    triplet: 'x86_64-linux-gnu',
  }).map((s) => s.name);
  for (const image of text.match(/tp-kind\/[a-z-]+:[\w.-]+/g) ?? [])
    assert.ok(built.includes(image), `${image} is built`);
  assert.ok(docs.some((d) => d.kind === 'StorageClass'));
  const cni = parseAllDocuments(
    fs.readFileSync(path.join(nodeFiles, 'kind', 'manifests', 'default-cni.yaml'), 'utf8'),
  );
  assert.is(cni.length, 1, 'kind creates at least one object from it');
});

test('the runtime wrapper drops what the host lacks, grants what Docker does not know, then runs runc', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpk-wrapper-'));
  try {
    const spec = path.join(dir, 'config.json');
    const caps = ['CAP_CHOWN', 'CAP_SYS_RESOURCE', 'CAP_AUDIT_READ'];
    fs.writeFileSync(
      spec,
      JSON.stringify({ process: { capabilities: { bounding: caps, effective: ['CAP_SYS_RESOURCE'] } } }),
    );
    // "runc" is a stub on PATH that prints its arguments.
    fs.writeFileSync(path.join(dir, 'runc'), '#!/bin/sh\necho "runc $*"\n', { mode: 0o755 });
    const wrapper = path.join(dir, 'wrapper');
    fs.writeFileSync(
      wrapper,
      runtimeWrapper({ drop: ['CAP_SYS_RESOURCE'], grant: ['CAP_PERFMON', 'CAP_BPF'] }),
      {
        mode: 0o755,
      },
    );
    const out = execFileSync(wrapper, ['--root', '/x', 'create', '--bundle', dir, 'id'], {
      env: { PATH: `${dir}:/usr/bin:/bin` },
    }).toString();
    assert.is(out.trim(), `runc --root /x create --bundle ${dir} id`);
    const edited = JSON.parse(fs.readFileSync(spec, 'utf8'));
    assert.equal(edited.process.capabilities, {
      bounding: ['CAP_CHOWN', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF'],
      effective: [],
    });
    // exec's process spec (--process FILE) likewise.
    const proc = path.join(dir, 'process.json');
    fs.writeFileSync(proc, JSON.stringify({ capabilities: { permitted: ['CAP_SYS_RESOURCE', 'CAP_KILL'] } }));
    execFileSync(wrapper, ['exec', '--process', proc, 'id'], { env: { PATH: `${dir}:/usr/bin:/bin` } });
    assert.equal(JSON.parse(fs.readFileSync(proc, 'utf8')).capabilities.permitted, ['CAP_KILL']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the bounding set: what it lacks among the capabilities Docker knows, what it has beyond them', () => {
  const newer = ['CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE'];
  // This machine's: every capability up to 40 but CAP_SYS_RESOURCE (24).
  assert.equal(capabilityFix('CapBnd:\t000001fffeffffff\n', 40), {
    drop: ['CAP_SYS_RESOURCE'],
    grant: newer,
  });
  assert.equal(capabilityFix('CapBnd:\t000001ffffffffff\n', 40), { drop: [], grant: newer });
  assert.equal(capabilityFix('CapBnd:\t0000003fffffffff\n', 37), { drop: [], grant: [] });
  assert.equal(capabilityFix('no such line', 40), { drop: [], grant: [] });
});

test('exec runs in the workstation namespace with its resolv.conf, kubeconfig and the lab tools', () => {
  const p = kindPaths({ TP_KIND_DIR: '/state', TP_KIND_CACHE: '/cache' });
  const argv = workstationArgv(p, '/labbin', ['tp', 'status']);
  assert.equal(argv.slice(0, 3), ['nsenter', '--net=/run/netns/tpkind-ws', '--']);
  assert.ok(argv.includes('/state/ws/resolv.conf'));
  assert.ok(argv.includes('KUBECONFIG=/state/kubeconfig-ws'));
  assert.ok(argv.some((a) => a.startsWith('PATH=/labbin:')));
  assert.equal(argv.slice(-2), ['tp', 'status']);
});

test("the FORWARD policy from a save's output; none without a filter table", () => {
  const save =
    '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [1:2]\n:FORWARD DROP [3:4]\nCOMMIT\n';
  assert.is(forwardPolicy(save), 'DROP');
  assert.is(forwardPolicy('*nat\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'), 'none');
  assert.is(forwardPolicy(''), 'none');
});

test.run();
