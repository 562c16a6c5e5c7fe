// The lab's image table: no image can be pulled here, so an image name selects a local command
// (lab/README.md, "Images"). Pure: the node agent supplies where tp's build and the lab's binaries are.
import { createHash } from 'node:crypto';
import * as path from 'node:path';

export const LAB_IMAGES = ['tp/tp', 'lab/echo', 'lab/shell', 'lab/coredns'] as const;
export type LabImage = (typeof LAB_IMAGES)[number];

/** The tp binaries the tp/tp image provides, selected by command[0]. */
export const TP_IMAGE_BINARIES = ['tp-manager', 'tp-agent', 'tp-init'] as const;

export interface ImageContext {
  /** The node binary that runs tp's and the lab's JavaScript. */
  nodePath: string;
  /** The tp checkout whose dist/ the tp/tp image runs. */
  tpRoot: string;
  /** package.json's bin map of that checkout: name -> path relative to tpRoot. */
  tpBins: Record<string, string>;
  /** The lab's binary directory (coredns); undefined when unknown. */
  labBinDir: string | undefined;
}

export interface ContainerCommand {
  image: string;
  command?: string[];
  args?: string[];
}

export interface ResolvedImage {
  image: LabImage;
  argv: string[];
  /** Stands in for a registry digest in container statuses. */
  imageId: string;
}

/** Why an image cannot run; the message names the table so the user knows what is accepted. */
export class ImageError extends Error {
  override name = 'ImageError';
  constructor(
    message: string,
    /** true: the image is not in the table at all (ErrImagePull); false: it is, but cannot run as asked. */
    readonly notInTable: boolean,
  ) {
    super(message);
  }
}

/**
 * The repository part of an image reference: no tag, no digest, no registry host, no docker.io/library
 * defaults. "docker.io/lab/echo:1.0" and "lab/echo@sha256:…" are both "lab/echo".
 */
export function imageRepository(image: string): string {
  let ref = image.trim();
  const at = ref.indexOf('@');
  if (at >= 0) ref = ref.slice(0, at);
  const lastSlash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > lastSlash) ref = ref.slice(0, colon);
  const parts = ref.split('/');
  // A first component with a dot or port, or "localhost", is a registry host.
  if (parts.length > 1 && (/[.:]/.test(parts[0]!) || parts[0] === 'localhost')) parts.shift();
  if (parts[0] === 'library' && parts.length > 1) parts.shift();
  return parts.join('/');
}

function tableHint(): string {
  return `the lab runs only the images in its table (lab/README.md): ${LAB_IMAGES.join(', ')}`;
}

function imageId(repository: string): string {
  return `${repository}@sha256:${createHash('sha256').update(`tp-lab image ${repository}`).digest('hex')}`;
}

export function resolveImage(container: ContainerCommand, ctx: ImageContext): ResolvedImage {
  const repository = imageRepository(container.image);
  const command = container.command ?? [];
  const args = container.args ?? [];
  switch (repository) {
    case 'tp/tp': {
      // command[0] picks the binary; an image without an entrypoint takes it from args[0] too.
      const argv = [...command, ...args];
      const binary = argv[0] === undefined ? undefined : path.basename(argv[0]);
      if (binary === undefined || !(TP_IMAGE_BINARIES as readonly string[]).includes(binary)) {
        throw new ImageError(
          `image ${container.image}: command[0] must be one of ${TP_IMAGE_BINARIES.join(', ')} (got ${JSON.stringify(argv[0] ?? '')})`,
          false,
        );
      }
      const script = ctx.tpBins[binary];
      if (script === undefined) {
        throw new ImageError(
          `image ${container.image}: ${ctx.tpRoot}/package.json has no bin "${binary}"`,
          false,
        );
      }
      return {
        image: 'tp/tp',
        argv: [ctx.nodePath, path.join(ctx.tpRoot, script), ...argv.slice(1)],
        imageId: imageId(repository),
      };
    }
    case 'lab/echo':
      // A fixed entrypoint: command is not supported, args are passed (the server ignores them).
      return {
        image: 'lab/echo',
        argv: [ctx.nodePath, path.join(ctx.tpRoot, 'dist/lab/images/echo/main.js'), ...args],
        imageId: imageId(repository),
      };
    case 'lab/shell': {
      // Like a busybox image: the default command is a shell.
      const argv = [...command, ...args];
      return { image: 'lab/shell', argv: argv.length ? argv : ['sh'], imageId: imageId(repository) };
    }
    case 'lab/coredns': {
      if (ctx.labBinDir === undefined) {
        throw new ImageError(
          `image ${container.image}: the node agent does not know the lab's binary directory (start it with --lab-bin)`,
          false,
        );
      }
      const rest = command.length && path.basename(command[0]!) === 'coredns' ? command.slice(1) : [];
      const coreArgs = [...rest, ...args];
      if (!coreArgs.includes('-conf')) coreArgs.push('-conf', '/etc/coredns/Corefile');
      return {
        image: 'lab/coredns',
        argv: [path.join(ctx.labBinDir, 'coredns'), ...coreArgs],
        imageId: imageId(repository),
      };
    }
    default:
      throw new ImageError(`image ${container.image} cannot be pulled: ${tableHint()}`, true);
  }
}
