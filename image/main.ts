// tp-image: builds tp's container image archive from this checkout and this host, without Docker
// (`npm run image` builds tp first). See image/README.md.
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { UsageError } from '../netaddr/parse.js';
import { BuildSession, type BuiltImage, formatSize } from './build.js';
import { removeScratch } from './scratch.js';
import { defaultArchivePath, tpImageSpec } from './tp-image.js';

const progress = (line: string) => process.stderr.write(`tp-image: ${line}\n`);

function renderBuilt(image: BuiltImage): string {
  const lines = [
    `archive   ${image.archive}${image.reused ? ' (unchanged, reused)' : ''}`,
    `name      ${image.name}`,
    `image ID  ${image.imageId}`,
    `manifest  ${image.manifestDigest}`,
    `size      ${formatSize(image.compressedSize)} compressed (archive ${formatSize(image.archiveSize)}), ${formatSize(image.uncompressedSize)} uncompressed`,
    'layers    compressed  uncompressed  digest',
    ...image.layers.map(
      (l) =>
        `          ${formatSize(l.size).padStart(10)}  ${formatSize(l.uncompressedSize).padStart(12)}  ${l.digest.slice(0, 19)}  ${l.comment}`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

const program = new Command('tp-image')
  .description(
    "builds tp's image archive (OCI layout + docker-archive) from this checkout's build and this host's files",
  )
  .option('--out <file>', 'the archive to write (default dist/image/<name>-<tag>.tar)')
  .option('--name <name>', 'the image name (default tp/tp:<version>)')
  .option('--node <path>', 'the node binary to ship (default the one running this)')
  .option('--stage <dir>', 'write the root filesystem into this directory instead (the Dockerfile copies it)')
  .option('--force', 'build even when the archive is current')
  .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
  .showHelpAfterError()
  .action(
    async (opts: {
      out?: string;
      name?: string;
      node?: string;
      stage?: string;
      force?: boolean;
      output: string;
    }) => {
      const spec = await tpImageSpec({ name: opts.name, node: opts.node });
      const session = new BuildSession({ progress, force: opts.force });
      try {
        if (opts.stage !== undefined) {
          await session.stage(spec, path.resolve(opts.stage));
          progress(`${spec.name}: root filesystem written to ${path.resolve(opts.stage)}`);
          return;
        }
        const out = path.resolve(opts.out ?? defaultArchivePath(spec.name));
        const built = await session.build(spec, out);
        process.stdout.write(
          opts.output === 'json' ? `${JSON.stringify(built, null, 2)}\n` : renderBuilt(built),
        );
      } finally {
        session.close();
      }
    },
  );

async function main(): Promise<void> {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 20) {
    process.stderr.write(`tp-image: Node ${process.version} is too old: tp needs Node 20 or newer\n`);
    process.exit(1);
  }
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => {
      removeScratch();
      process.exit(code);
    });
  }
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    removeScratch();
    const message = (err as Error).message;
    process.stderr.write(
      `tp-image: ${err instanceof UsageError ? message : `${message}\n${(err as Error).stack}`}\n`,
    );
    process.exit(1);
  }
}

await main();
