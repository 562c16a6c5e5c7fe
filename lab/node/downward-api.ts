// The downward API: pod and container facts exposed to containers through env (fieldRef,
// resourceFieldRef) and downwardAPI volume files, with the kubelet's formats. Pure.
import type { V1Container, V1Pod, V1ResourceFieldSelector } from '@kubernetes/client-node';

export interface PodFacts {
  pod: V1Pod;
  /** Unset until the pod's network exists. */
  podIP: string | undefined;
  hostIP: string;
  nodeName: string;
  /** The node's allocatable resources: what a container without a limit may use. */
  nodeAllocatable: Record<string, string>;
}

export class FieldPathError extends Error {
  override name = 'FieldPathError';
}

const SUFFIXES: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A resource.Quantity ("250m", "128Mi", "1e3") as a number. */
export function parseQuantity(text: string): number {
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei))?$/.exec(
    text.trim(),
  );
  if (!m) throw new FieldPathError(`invalid quantity "${text}"`);
  const value = Number(m[1]);
  if (m[2]) return value * 10 ** Number(m[2].slice(1));
  return value * SUFFIXES[m[3] ?? '']!;
}

function labelKey(fieldPath: string, prefix: string): string | undefined {
  const m = new RegExp(`^${prefix.replace('.', '\\.')}\\['(.+)'\\]$`).exec(fieldPath);
  return m ? m[1] : undefined;
}

/** Go's %q for the strings labels and annotations hold; JSON's escaping matches it for those. */
function quote(value: string): string {
  return JSON.stringify(value);
}

/** The kubelet's fieldpath.FormatMap: sorted key="value" lines. */
export function formatMap(map: Record<string, string> | undefined): string {
  const entries = Object.entries(map ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return entries.map(([k, v]) => `${k}=${quote(v)}`).join('\n');
}

/** A fieldRef's value. Env supports every path; volumes only the metadata ones (checked by callers). */
export function fieldRefValue(fieldPath: string, facts: PodFacts): string {
  const { pod } = facts;
  const meta = pod.metadata ?? {};
  switch (fieldPath) {
    case 'metadata.name':
      return meta.name ?? '';
    case 'metadata.namespace':
      return meta.namespace ?? '';
    case 'metadata.uid':
      return meta.uid ?? '';
    case 'metadata.labels':
      return formatMap(meta.labels);
    case 'metadata.annotations':
      return formatMap(meta.annotations);
    case 'spec.nodeName':
      return pod.spec?.nodeName ?? facts.nodeName;
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? '';
    case 'status.hostIP':
    case 'status.hostIPs':
      return facts.hostIP;
    case 'status.podIP':
    case 'status.podIPs':
      return facts.podIP ?? '';
  }
  const label = labelKey(fieldPath, 'metadata.labels');
  if (label !== undefined) return meta.labels?.[label] ?? '';
  const annotation = labelKey(fieldPath, 'metadata.annotations');
  if (annotation !== undefined) return meta.annotations?.[annotation] ?? '';
  throw new FieldPathError(`unsupported fieldPath "${fieldPath}"`);
}

/** A resourceFieldRef's value: ceil(quantity / divisor), with node allocatable standing in for a missing limit. */
export function resourceFieldValue(
  ref: V1ResourceFieldSelector,
  container: V1Container,
  nodeAllocatable: Record<string, string>,
): string {
  const m = /^(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-.+)$/.exec(ref.resource);
  if (!m) throw new FieldPathError(`unsupported resource "${ref.resource}"`);
  const [, kind, resource] = m as unknown as [string, 'limits' | 'requests', string];
  const resources = container.resources ?? {};
  let quantity: string | undefined = resources[kind]?.[resource];
  if (quantity === undefined && kind === 'limits') quantity = nodeAllocatable[resource];
  if (quantity === undefined && kind === 'requests') quantity = resources.limits?.[resource] ?? '0';
  const divisorText = ref.divisor === undefined ? '1' : String(ref.divisor);
  const divisor = parseQuantity(divisorText);
  if (divisor <= 0) throw new FieldPathError(`invalid divisor "${divisorText}"`);
  const value = parseQuantity(quantity ?? '0');
  // Round the quotient to the nearest representable step before the ceiling: 0.1/0.001 is not 100.
  const quotient = Math.round((value / divisor) * 1e9) / 1e9;
  return String(Math.ceil(quotient));
}
