// Builds tp: type-checks and compiles TypeScript to dist/, bundles the agent, the manager, tp-init and
// the lab's echo server into one file each (dist/bundle), compiles the eBPF programs when clang is
// present, and marks the bins executable.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as esbuild from 'esbuild';

const root = new URL('.', import.meta.url).pathname;
process.chdir(root);

execFileSync(
  process.execPath,
  ['node_modules/typescript/bin/tsc', '-p', '.', '--incremental', '--tsBuildInfoFile', 'dist/.tsbuildinfo'],
  {
    stdio: 'inherit',
  },
);

// Compiled files whose source is gone (moved or deleted) would still be picked up by the test runner.
function pruneStale(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = `${dir}/${entry.name}`;
    if (entry.isDirectory()) {
      if (p !== 'dist/bundle') pruneStale(p);
    } else if (/\.js(\.map)?$/.test(entry.name)) {
      const source = p.slice('dist/'.length).replace(/\.js(\.map)?$/, '.ts');
      if (!fs.existsSync(source)) fs.rmSync(p);
    }
  }
}
pruneStale('dist');

// The bundles tp's image runs (image/tp-image.ts puts dist/bundle in /opt/tp) and the lab's echo server.
// koffi carries a native module: it stays external and is loaded from node_modules at run time.
const bundle = { bundle: true, platform: 'node', target: 'node20', minify: true, logLevel: 'warning' };
// import.meta.url is the bundle's own URL, as it is each module's in dist/ (CommonJS has no import.meta).
const cjsImportMeta = {
  inject: ['agent/bundle-import-meta.ts'],
  define: { 'import.meta.url': 'bundleImportMetaUrl' },
};
await esbuild.build({
  ...bundle,
  ...cjsImportMeta,
  entryPoints: ['agent/main.ts'],
  format: 'cjs',
  outfile: 'dist/bundle/tp-agent.cjs',
  sourcemap: 'linked',
  external: ['koffi'],
});
// The agent's passthrough thread (agent/passthrough-thread.ts): its own small bundle beside the agent's,
// which starts it as a worker.
await esbuild.build({
  ...bundle,
  entryPoints: ['agent/passthrough-thread.ts'],
  format: 'cjs',
  outfile: 'dist/bundle/tp-agent-passthrough.cjs',
  external: ['koffi'],
});
// PID 1 of the agent container: holds the listening sockets and runs tp-agent (agent/holder.ts). Its own
// small bundle, so the second Node process in the container loads nothing of the agent.
await esbuild.build({
  ...bundle,
  entryPoints: ['agent/holder-main.ts'],
  format: 'cjs',
  outfile: 'dist/bundle/tp-agent-holder.cjs',
  external: ['koffi'],
});
// The manager and tp-init use top-level await: ESM, with require (for bundled CommonJS packages) and
// __dirname/__filename defined as in CommonJS.
const esmBanner = [
  "import { createRequire as __tpCreateRequire } from 'node:module';",
  "import { fileURLToPath as __tpFileURLToPath } from 'node:url';",
  'const require = __tpCreateRequire(import.meta.url);',
  'const __filename = __tpFileURLToPath(import.meta.url);',
  "const __dirname = __filename.slice(0, __filename.lastIndexOf('/'));",
].join('\n');
for (const [entry, out] of [
  ['manager/main.ts', 'dist/bundle/tp-manager.mjs'],
  ['init-container/main.ts', 'dist/bundle/tp-init.mjs'],
]) {
  await esbuild.build({
    ...bundle,
    entryPoints: [entry],
    format: 'esm',
    outfile: out,
    sourcemap: 'linked',
    external: ['koffi'],
    banner: { js: esmBanner },
  });
}
await esbuild.build({
  ...bundle,
  entryPoints: ['lab/images/echo/main.ts'],
  format: 'cjs',
  outfile: 'dist/bundle/lab-echo.cjs',
});

if (fs.existsSync('bpf/build.sh')) execFileSync('bash', ['bpf/build.sh'], { stdio: 'inherit' });
// The eBPF objects beside the bundles: bpf/loader.ts looks for them next to the running file.
for (const obj of fs.existsSync('dist/bpf') ? fs.readdirSync('dist/bpf') : []) {
  if (obj.endsWith('.bpf.o')) fs.copyFileSync(`dist/bpf/${obj}`, `dist/bundle/${obj}`);
}

const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
for (const bin of Object.values(pkg.bin)) {
  if (!fs.existsSync(bin)) continue;
  const text = fs.readFileSync(bin, 'utf8');
  // `node --`: everything after the script is the bin's own (Node 20 reads --env-file anywhere on its
  // command line otherwise, before the bin runs). `env -S` splits the two words (GNU coreutils, BSD, macOS).
  const shebang = '#!/usr/bin/env -S node --\n';
  if (!text.startsWith('#!')) fs.writeFileSync(bin, `${shebang}${text}`);
  else if (!text.startsWith(shebang))
    fs.writeFileSync(bin, `${shebang}${text.slice(text.indexOf('\n') + 1)}`);
  fs.chmodSync(bin, 0o755);
}
