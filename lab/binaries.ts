// The lab's Go binaries (control plane, kubelet, CNI plugins, tools): lab/build.sh builds them from the Go module proxy into a cache keyed by
// their versions. When every binary is already cached the build script is not run at all, so a warm
// `tp-lab up` needs neither Go nor the network.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

/** The CNI plugins the node's containerd runs (in <bin>/cni/, its CNI bin_dir). */
export const CNI_PLUGINS = ['bridge', 'host-local', 'loopback', 'portmap'] as const;

export const LAB_BINARIES = [
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kube-proxy',
  'kubectl',
  'kubelet',
  'kubeadm',
  'etcd',
  'helm',
  'coredns',
  'crictl',
  ...CNI_PLUGINS.map((p) => `cni/${p}` as const),
] as const;

/** The wrapper modules' directory (lab/ in the checkout), found from dist/lab/*.js. */
export function labSourceDir(): string {
  return path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'lab');
}

function requiredVersion(goMod: string, module: string): string {
  const text = fs.readFileSync(goMod, 'utf8');
  const m = new RegExp(`^require ${module.replace(/[.\\/]/g, '\\$&')} (\\S+)`, 'm').exec(text);
  if (!m) throw new Error(`${goMod} has no single-line \`require ${module}\``);
  return m[1]!;
}

/** The bin directory build.sh uses (same rule: cache root / versions / bin). */
export function cachedBinDir(src = labSourceDir()): string {
  const cache =
    process.env.TP_LAB_CACHE ||
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'tp-lab');
  const k8s = requiredVersion(path.join(src, 'k8s', 'go.mod'), 'k8s.io/kubernetes');
  const etcd = requiredVersion(path.join(src, 'etcd', 'go.mod'), 'go.etcd.io/etcd/server/v3');
  const helm = requiredVersion(path.join(src, 'helm', 'go.mod'), 'helm.sh/helm/v3');
  const coredns = requiredVersion(path.join(src, 'coredns', 'go.mod'), 'github.com/coredns/coredns');
  const cni = requiredVersion(path.join(src, 'cni', 'go.mod'), 'github.com/containernetworking/plugins');
  const cri = requiredVersion(path.join(src, 'cri', 'go.mod'), 'sigs.k8s.io/cri-tools');
  return path.join(
    cache,
    `k8s-${k8s}-etcd-${etcd}-helm-${helm}-coredns-${coredns}-cni-${cni}-cri-${cri}`,
    'bin',
  );
}

export function missingBinaries(bin: string): string[] {
  return LAB_BINARIES.filter((name) => {
    try {
      fs.accessSync(path.join(bin, name), fs.constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
}

/**
 * Returns the bin directory, running lab/build.sh first when a binary is missing. The script's
 * progress lines go to stderr as they come; its failure message (no Go, proxy unreachable, compile
 * error) is shown as-is and becomes the error.
 */
export async function ensureBinaries(onProgress: (line: string) => void): Promise<string> {
  const src = labSourceDir();
  const bin = cachedBinDir(src);
  if (missingBinaries(bin).length === 0) return bin;
  const script = path.join(src, 'build.sh');
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: is this a complete tp checkout?`);
  const { code, stdout, stderrTail } = await new Promise<{
    code: number;
    stdout: string;
    stderrTail: string[];
  }>((resolve, reject) => {
    const child = spawn('bash', [script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const tail: string[] = [];
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        onProgress(line);
        tail.push(line);
        if (tail.length > 20) tail.shift();
      }
    });
    child.on('error', reject);
    child.on('close', (c) => {
      if (partial) {
        onProgress(partial);
        tail.push(partial);
      }
      resolve({ code: c ?? 1, stdout: out, stderrTail: tail });
    });
  });
  if (code !== 0) {
    // build.sh's own message (no Go, proxy unreachable, the compile error) was just shown above.
    const shown = stderrTail.some((l) => l.startsWith('tp-lab:'));
    throw new UsageError(
      `building the lab's binaries failed (lab/build.sh exit ${code})${shown ? '; its message is above' : `: ${stderrTail.slice(-5).join('\n')}`}`,
    );
  }
  const printed = stdout.trim().split('\n').pop() ?? '';
  const missing = missingBinaries(printed);
  if (missing.length)
    throw new Error(`lab/build.sh finished but ${missing.join(', ')} missing in ${printed}`);
  return printed;
}
