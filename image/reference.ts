// Image names as Docker and containerd read them: "tp/tp:0.1.0" is docker.io/tp/tp:0.1.0, "pause:3.10"
// is docker.io/library/pause:3.10, a first component with a dot or a port (or "localhost") is a registry.
// Pure.
import { UsageError } from '../netaddr/parse.js';

export interface ImageReference {
  /** The registry, e.g. docker.io or registry.k8s.io. */
  domain: string;
  /** The repository inside it, e.g. tp/tp or library/busybox. */
  path: string;
  tag: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::\d+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;

/** Parses NAME:TAG; the tag is required (an untagged image is :latest, which Kubernetes always pulls). */
export function parseReference(name: string): ImageReference {
  const bad = (why: string) =>
    new UsageError(
      `invalid image name "${name}": ${why} (expected [REGISTRY/]REPOSITORY:TAG, e.g. tp/tp:0.1.0)`,
    );
  if (name.includes('@')) throw bad('a digest cannot name an image that is being built');
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  if (colon <= slash) throw bad('the tag is missing');
  const tag = name.slice(colon + 1);
  if (!TAG.test(tag)) throw bad(`"${tag}" is not a valid tag`);
  const parts = name.slice(0, colon).split('/');
  let domain = 'docker.io';
  if (parts.length > 1 && (/[.:]/.test(parts[0]!) || parts[0] === 'localhost')) {
    domain = parts.shift()!;
    if (!DOMAIN.test(domain)) throw bad(`"${domain}" is not a valid registry`);
  }
  for (const part of parts) {
    if (!COMPONENT.test(part))
      throw bad(`"${part}" is not a valid repository component (lowercase letters, digits, . _ -)`);
  }
  if (domain === 'docker.io' && parts.length === 1) parts.unshift('library');
  return { domain, path: parts.join('/'), tag };
}

/** The fully qualified name containerd stores: docker.io/tp/tp:0.1.0. */
export function fullName(ref: ImageReference): string {
  return `${ref.domain}/${ref.path}:${ref.tag}`;
}

/** The short form Docker shows and docker-archive's RepoTags carry: tp/tp:0.1.0, busybox:1. */
export function familiarName(ref: ImageReference): string {
  if (ref.domain !== 'docker.io') return fullName(ref);
  const path = ref.path.startsWith('library/') ? ref.path.slice('library/'.length) : ref.path;
  return `${path}:${ref.tag}`;
}

/** A file name for the image's archive: tp-tp-0.1.0.tar, pause-3.10.tar (the registry left out). */
export function archiveFileName(ref: ImageReference): string {
  const path = ref.path.startsWith('library/') ? ref.path.slice('library/'.length) : ref.path;
  return `${path.replaceAll('/', '-')}-${ref.tag}.tar`;
}
