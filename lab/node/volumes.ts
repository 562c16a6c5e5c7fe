// What each pod volume holds: the files of configMap, secret, downwardAPI and projected volumes
// (service-account tokens included), or a plain directory (emptyDir) or a host path. Pure: the node
// agent fetches the objects and tokens first, then writes the files (volume-writer.ts).
import type { V1DownwardAPIVolumeFile, V1KeyToPath, V1Pod, V1Volume } from '@kubernetes/client-node';
import { FieldPathError, fieldRefValue, type PodFacts, resourceFieldValue } from './downward-api.js';
import type { FetchedObjects } from './env.js';

export interface ProjectedFile {
  /** Relative to the volume's directory. */
  path: string;
  data: Buffer;
  mode: number;
}

export type VolumeContent =
  | { kind: 'files'; files: ProjectedFile[] }
  | { kind: 'emptyDir' }
  | { kind: 'hostPath'; path: string; type: string };

/** Why a volume cannot be set up yet (the kubelet's FailedMount); the pod waits in ContainerCreating. */
export class VolumeError extends Error {
  override name = 'VolumeError';
}

export interface TokenSpec {
  audience: string;
  expirationSeconds: number;
}

export const DEFAULT_FILE_MODE = 0o644;
export const DEFAULT_TOKEN_EXPIRATION_SECONDS = 3600;

export function tokenKey(spec: TokenSpec): string {
  return `${spec.audience}|${spec.expirationSeconds}`;
}

/** The service-account tokens a pod's projected volumes need (TokenRequest, bound to the pod). */
export function requiredTokens(pod: V1Pod): TokenSpec[] {
  const specs = new Map<string, TokenSpec>();
  for (const v of pod.spec?.volumes ?? []) {
    for (const s of v.projected?.sources ?? []) {
      if (!s.serviceAccountToken) continue;
      const spec = {
        audience: s.serviceAccountToken.audience ?? '',
        expirationSeconds: s.serviceAccountToken.expirationSeconds ?? DEFAULT_TOKEN_EXPIRATION_SECONDS,
      };
      specs.set(tokenKey(spec), spec);
    }
  }
  return [...specs.values()];
}

export interface ProjectionContext {
  facts: PodFacts;
  objects: FetchedObjects;
  /** Tokens by tokenKey. */
  tokens: Map<string, string>;
}

function checkPath(volume: string, p: string): string {
  const parts = p.split('/');
  if (p === '' || p.startsWith('/') || parts.includes('..')) {
    throw new VolumeError(`volume ${volume}: invalid path ${JSON.stringify(p)}`);
  }
  return parts.filter((s) => s !== '' && s !== '.').join('/');
}

/** Files for a configMap/secret key set: every key, or the listed items. */
function keyFiles(
  volume: string,
  what: string,
  entries: Map<string, Buffer>,
  items: V1KeyToPath[] | undefined,
  mode: number,
  optional: boolean,
): ProjectedFile[] {
  if (!items || items.length === 0) {
    return [...entries].map(([key, data]) => ({ path: checkPath(volume, key), data, mode }));
  }
  const files: ProjectedFile[] = [];
  for (const item of items) {
    const data = entries.get(item.key);
    if (data === undefined) {
      if (optional) continue;
      throw new VolumeError(`volume ${volume}: ${what} has no key "${item.key}"`);
    }
    files.push({ path: checkPath(volume, item.path), data, mode: item.mode ?? mode });
  }
  return files;
}

function configMapEntries(ctx: ProjectionContext, name: string): Map<string, Buffer> | null {
  const cm = ctx.objects.configMaps.get(name);
  if (!cm) return null;
  const entries = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(cm.data ?? {})) entries.set(k, Buffer.from(v, 'utf8'));
  for (const [k, v] of Object.entries(cm.binaryData ?? {})) entries.set(k, Buffer.from(v, 'base64'));
  return entries;
}

function secretEntries(ctx: ProjectionContext, name: string): Map<string, Buffer> | null {
  const secret = ctx.objects.secrets.get(name);
  if (!secret) return null;
  return new Map(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
}

const VOLUME_FIELD_PATHS = /^metadata\.(name|namespace|uid|labels|annotations)(\['.+'\])?$/;

function downwardFiles(
  volume: string,
  items: V1DownwardAPIVolumeFile[],
  mode: number,
  ctx: ProjectionContext,
): ProjectedFile[] {
  const pod = ctx.facts.pod;
  return items.map((item) => {
    let value: string;
    try {
      if (item.fieldRef) {
        if (!VOLUME_FIELD_PATHS.test(item.fieldRef.fieldPath)) {
          throw new FieldPathError(`fieldPath "${item.fieldRef.fieldPath}" is not supported in volumes`);
        }
        value = fieldRefValue(item.fieldRef.fieldPath, ctx.facts);
      } else if (item.resourceFieldRef) {
        const name = item.resourceFieldRef.containerName;
        const container = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find(
          (c) => c.name === name,
        );
        if (!container) throw new FieldPathError(`container "${name ?? ''}" not found`);
        value = resourceFieldValue(item.resourceFieldRef, container, ctx.facts.nodeAllocatable);
      } else throw new FieldPathError('item has neither fieldRef nor resourceFieldRef');
    } catch (err) {
      if (err instanceof FieldPathError)
        throw new VolumeError(`volume ${volume}: ${item.path}: ${err.message}`);
      throw err;
    }
    return { path: checkPath(volume, item.path), data: Buffer.from(value, 'utf8'), mode: item.mode ?? mode };
  });
}

export function projectVolume(volume: V1Volume, ctx: ProjectionContext): VolumeContent {
  const name = volume.name;
  if (volume.emptyDir) return { kind: 'emptyDir' };
  if (volume.hostPath)
    return { kind: 'hostPath', path: volume.hostPath.path, type: volume.hostPath.type ?? '' };
  if (volume.configMap) {
    const source = volume.configMap;
    const entries = configMapEntries(ctx, source.name ?? '');
    if (!entries) {
      if (source.optional) return { kind: 'files', files: [] };
      throw new VolumeError(`volume ${name}: configmap "${source.name}" not found`);
    }
    const mode = source.defaultMode ?? DEFAULT_FILE_MODE;
    return {
      kind: 'files',
      files: keyFiles(
        name,
        `configmap "${source.name}"`,
        entries,
        source.items,
        mode,
        source.optional === true,
      ),
    };
  }
  if (volume.secret) {
    const source = volume.secret;
    const entries = secretEntries(ctx, source.secretName ?? '');
    if (!entries) {
      if (source.optional) return { kind: 'files', files: [] };
      throw new VolumeError(`volume ${name}: secret "${source.secretName}" not found`);
    }
    const mode = source.defaultMode ?? DEFAULT_FILE_MODE;
    return {
      kind: 'files',
      files: keyFiles(
        name,
        `secret "${source.secretName}"`,
        entries,
        source.items,
        mode,
        source.optional === true,
      ),
    };
  }
  if (volume.downwardAPI) {
    const mode = volume.downwardAPI.defaultMode ?? DEFAULT_FILE_MODE;
    return { kind: 'files', files: downwardFiles(name, volume.downwardAPI.items ?? [], mode, ctx) };
  }
  if (volume.projected) {
    const mode = volume.projected.defaultMode ?? DEFAULT_FILE_MODE;
    const files: ProjectedFile[] = [];
    for (const source of volume.projected.sources ?? []) {
      if (source.configMap) {
        const cm = source.configMap;
        const entries = configMapEntries(ctx, cm.name ?? '');
        if (!entries) {
          if (cm.optional) continue;
          throw new VolumeError(`volume ${name}: configmap "${cm.name}" not found`);
        }
        files.push(
          ...keyFiles(name, `configmap "${cm.name}"`, entries, cm.items, mode, cm.optional === true),
        );
      } else if (source.secret) {
        const s = source.secret;
        const entries = secretEntries(ctx, s.name ?? '');
        if (!entries) {
          if (s.optional) continue;
          throw new VolumeError(`volume ${name}: secret "${s.name}" not found`);
        }
        files.push(...keyFiles(name, `secret "${s.name}"`, entries, s.items, mode, s.optional === true));
      } else if (source.downwardAPI) {
        files.push(...downwardFiles(name, source.downwardAPI.items ?? [], mode, ctx));
      } else if (source.serviceAccountToken) {
        const t = source.serviceAccountToken;
        const key = tokenKey({
          audience: t.audience ?? '',
          expirationSeconds: t.expirationSeconds ?? DEFAULT_TOKEN_EXPIRATION_SECONDS,
        });
        const token = ctx.tokens.get(key);
        if (token === undefined) throw new VolumeError(`volume ${name}: no service account token yet`);
        files.push({ path: checkPath(name, t.path), data: Buffer.from(token, 'utf8'), mode });
      } else {
        throw new VolumeError(`volume ${name}: this projected source is not supported by the lab`);
      }
    }
    return { kind: 'files', files };
  }
  const type = Object.keys(volume).find((k) => k !== 'name') ?? 'unknown';
  throw new VolumeError(
    `volume ${name}: ${type} volumes are not supported by the lab (use configMap, secret, emptyDir, downwardAPI, projected or hostPath)`,
  );
}
