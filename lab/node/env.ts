// A container's environment as the kubelet builds it: service links, envFrom, env with valueFrom
// (downward API, configMap and secret keys), and $(VAR) references. Pure: the API objects it needs
// are fetched beforehand (see referencedObjects) and handed in.
import type { V1ConfigMap, V1Container, V1Pod, V1Secret, V1Service } from '@kubernetes/client-node';
import { FieldPathError, fieldRefValue, type PodFacts, resourceFieldValue } from './downward-api.js';

/** Why a container cannot start yet (CreateContainerConfigError); retried on the next sync. */
export class ContainerConfigError extends Error {
  override name = 'ContainerConfigError';
}

/** ConfigMaps and secrets of the pod's namespace by name; null when they do not exist. */
export interface FetchedObjects {
  configMaps: Map<string, V1ConfigMap | null>;
  secrets: Map<string, V1Secret | null>;
}

export interface EnvContext {
  facts: PodFacts;
  objects: FetchedObjects;
  /** Services of every namespace (the node may list them); filtered here as the kubelet does. */
  services: readonly V1Service[];
}

export interface EnvVar {
  name: string;
  value: string;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The namespace of the "kubernetes" service, whose env vars every pod gets. */
const MASTER_NAMESPACE = 'default';
const MASTER_SERVICES = new Set(['kubernetes']);

/** The configMaps and secrets a pod's containers and volumes refer to. */
export function referencedObjects(pod: V1Pod): { configMaps: Set<string>; secrets: Set<string> } {
  const configMaps = new Set<string>();
  const secrets = new Set<string>();
  const spec = pod.spec;
  for (const c of [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])]) {
    for (const from of c.envFrom ?? []) {
      if (from.configMapRef?.name) configMaps.add(from.configMapRef.name);
      if (from.secretRef?.name) secrets.add(from.secretRef.name);
    }
    for (const e of c.env ?? []) {
      if (e.valueFrom?.configMapKeyRef?.name) configMaps.add(e.valueFrom.configMapKeyRef.name);
      if (e.valueFrom?.secretKeyRef?.name) secrets.add(e.valueFrom.secretKeyRef.name);
    }
  }
  for (const v of spec?.volumes ?? []) {
    if (v.configMap?.name) configMaps.add(v.configMap.name);
    if (v.secret?.secretName) secrets.add(v.secret.secretName);
    for (const s of v.projected?.sources ?? []) {
      if (s.configMap?.name) configMaps.add(s.configMap.name);
      if (s.secret?.name) secrets.add(s.secret.name);
    }
  }
  return { configMaps, secrets };
}

function envName(serviceName: string): string {
  return serviceName.toUpperCase().replace(/-/g, '_');
}

function hasClusterIP(service: V1Service): boolean {
  const ip = service.spec?.clusterIP;
  return ip !== undefined && ip !== '' && ip !== 'None';
}

/** The Docker-links style variables of one service (envvars.FromServices). */
export function serviceVariables(service: V1Service): EnvVar[] {
  const name = envName(service.metadata?.name ?? '');
  const host = service.spec!.clusterIP!;
  const ports = service.spec?.ports ?? [];
  const out: EnvVar[] = [{ name: `${name}_SERVICE_HOST`, value: host }];
  if (ports.length === 0) return out;
  out.push({ name: `${name}_SERVICE_PORT`, value: String(ports[0]!.port) });
  for (const p of ports) {
    if (p.name) out.push({ name: `${name}_SERVICE_PORT_${envName(p.name)}`, value: String(p.port) });
  }
  const hostPort = (port: number) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
  ports.forEach((p, i) => {
    const protocol = (p.protocol ?? 'TCP').toUpperCase();
    const lower = protocol.toLowerCase();
    const url = `${lower}://${hostPort(p.port)}`;
    if (i === 0) out.push({ name: `${name}_PORT`, value: url });
    const prefix = `${name}_PORT_${p.port}_${protocol}`;
    out.push(
      { name: prefix, value: url },
      { name: `${prefix}_PROTO`, value: lower },
      { name: `${prefix}_PORT`, value: String(p.port) },
      { name: `${prefix}_ADDR`, value: host },
    );
  });
  return out;
}

/** Service env of a pod: its namespace's services (unless enableServiceLinks is false) and "kubernetes". */
export function serviceEnv(pod: V1Pod, services: readonly V1Service[]): EnvVar[] {
  const namespace = pod.metadata?.namespace ?? 'default';
  const links = pod.spec?.enableServiceLinks !== false;
  const chosen = new Map<string, V1Service>();
  for (const s of services) {
    if (!hasClusterIP(s)) continue;
    const name = s.metadata?.name ?? '';
    const ns = s.metadata?.namespace ?? '';
    if (ns === MASTER_NAMESPACE && MASTER_SERVICES.has(name)) {
      if (!chosen.has(name)) chosen.set(name, s);
    } else if (ns === namespace && links) {
      chosen.set(name, s);
    }
  }
  const sorted = [...chosen.keys()].sort();
  return sorted.flatMap((name) => serviceVariables(chosen.get(name)!));
}

/**
 * Kubernetes' $(VAR) expansion: a defined $(VAR) is replaced, an undefined one stays as written,
 * $$ is a literal $ (so $$(VAR) stays "$(VAR)").
 */
export function expandVars(input: string, lookup: (name: string) => string | undefined): string {
  let out = '';
  for (let i = 0; i < input.length; i++) {
    const ch = input[i]!;
    if (ch !== '$' || i + 1 >= input.length) {
      out += ch;
      continue;
    }
    const next = input[i + 1]!;
    if (next === '$') {
      out += '$';
      i++;
    } else if (next === '(') {
      const close = input.indexOf(')', i + 2);
      if (close < 0) {
        out += input.slice(i);
        break;
      }
      const name = input.slice(i + 2, close);
      const value = name === '' ? undefined : lookup(name);
      out += value ?? input.slice(i, close + 1);
      i = close;
    } else {
      out += ch;
    }
  }
  return out;
}

/** C_IDENTIFIER-ish env names the kubelet accepts from envFrom; other keys are skipped. */
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

function decodeSecretValue(value: string): string {
  return Buffer.from(value, 'base64').toString('utf8');
}

function configMapKey(ctx: EnvContext, name: string, key: string, optional: boolean): string | undefined {
  const cm = ctx.objects.configMaps.get(name);
  const ns = ctx.facts.pod.metadata?.namespace;
  if (!cm) {
    if (optional) return undefined;
    throw new ContainerConfigError(`configmap "${name}" not found`);
  }
  const value =
    cm.data?.[key] ??
    (cm.binaryData?.[key] !== undefined ? decodeSecretValue(cm.binaryData[key]) : undefined);
  if (value === undefined && !optional) {
    throw new ContainerConfigError(`couldn't find key ${key} in ConfigMap ${ns}/${name}`);
  }
  return value;
}

function secretKey(ctx: EnvContext, name: string, key: string, optional: boolean): string | undefined {
  const secret = ctx.objects.secrets.get(name);
  const ns = ctx.facts.pod.metadata?.namespace;
  if (!secret) {
    if (optional) return undefined;
    throw new ContainerConfigError(`secret "${name}" not found`);
  }
  const raw = secret.data?.[key];
  if (raw === undefined) {
    if (optional) return undefined;
    throw new ContainerConfigError(`couldn't find key ${key} in Secret ${ns}/${name}`);
  }
  return decodeSecretValue(raw);
}

/**
 * The variables a container defines, in order: envFrom sources, then env (later wins), with $(VAR)
 * expanded against service env and the variables defined before. Throws ContainerConfigError.
 */
export function containerEnv(container: V1Container, ctx: EnvContext): EnvVar[] {
  const services = serviceEnv(ctx.facts.pod, ctx.services);
  const defined = new Map<string, string>(services.map((v) => [v.name, v.value]));
  const out: EnvVar[] = [];
  const define = (name: string, value: string) => {
    defined.set(name, value);
    out.push({ name, value });
  };
  for (const from of container.envFrom ?? []) {
    const prefix = from.prefix ?? '';
    if (from.configMapRef) {
      const cm = ctx.objects.configMaps.get(from.configMapRef.name ?? '');
      if (!cm) {
        if (from.configMapRef.optional) continue;
        throw new ContainerConfigError(`configmap "${from.configMapRef.name}" not found`);
      }
      for (const [k, v] of Object.entries(cm.data ?? {}))
        if (ENV_NAME.test(prefix + k)) define(prefix + k, v);
    }
    if (from.secretRef) {
      const secret = ctx.objects.secrets.get(from.secretRef.name ?? '');
      if (!secret) {
        if (from.secretRef.optional) continue;
        throw new ContainerConfigError(`secret "${from.secretRef.name}" not found`);
      }
      for (const [k, v] of Object.entries(secret.data ?? {})) {
        if (ENV_NAME.test(prefix + k)) define(prefix + k, decodeSecretValue(v));
      }
    }
  }
  for (const e of container.env ?? []) {
    const source = e.valueFrom;
    if (!source) {
      define(
        e.name,
        expandVars(e.value ?? '', (n) => defined.get(n)),
      );
      continue;
    }
    let value: string | undefined;
    try {
      if (source.fieldRef) value = fieldRefValue(source.fieldRef.fieldPath, ctx.facts);
      else if (source.resourceFieldRef) {
        const target = source.resourceFieldRef.containerName
          ? [...(ctx.facts.pod.spec?.initContainers ?? []), ...(ctx.facts.pod.spec?.containers ?? [])].find(
              (c) => c.name === source.resourceFieldRef!.containerName,
            )
          : container;
        if (!target) {
          throw new ContainerConfigError(`container "${source.resourceFieldRef.containerName}" not found`);
        }
        value = resourceFieldValue(source.resourceFieldRef, target, ctx.facts.nodeAllocatable);
      } else if (source.configMapKeyRef) {
        const ref = source.configMapKeyRef;
        value = configMapKey(ctx, ref.name ?? '', ref.key, ref.optional === true);
      } else if (source.secretKeyRef) {
        const ref = source.secretKeyRef;
        value = secretKey(ctx, ref.name ?? '', ref.key, ref.optional === true);
      }
    } catch (err) {
      if (err instanceof FieldPathError) throw new ContainerConfigError(`env ${e.name}: ${err.message}`);
      throw err;
    }
    if (value !== undefined) define(e.name, value);
  }
  // Service variables the container did not define itself come last, like the kubelet's.
  for (const v of services) if (!out.some((o) => o.name === v.name)) out.push(v);
  return out;
}

/** What every process of the container sees: runtime defaults, then the container's variables. */
export function processEnvironment(container: V1Container, hostname: string, uid: number, vars: EnvVar[]) {
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOSTNAME: hostname,
    HOME: uid === 0 ? '/root' : '/',
  };
  if (container.tty) env.TERM = 'xterm';
  for (const v of vars) env[v.name] = v.value;
  return env;
}

/** command and args with $(VAR) expanded against the container's variables. */
export function expandCommand(values: string[] | undefined, vars: EnvVar[]): string[] | undefined {
  if (values === undefined) return undefined;
  const map = new Map(vars.map((v) => [v.name, v.value]));
  return values.map((v) => expandVars(v, (n) => map.get(n)));
}
