// Builds tp: type-checks and compiles TypeScript to dist/, bundles the agent into one file,
// compiles the eBPF programs when clang is present, and marks the bins executable.
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
      if (p !== 'dist/bundle' && p !== 'dist/bpf') pruneStale(p);
    } else if (/\.js(\.map)?$/.test(entry.name)) {
      const source = p.slice('dist/'.length).replace(/\.js(\.map)?$/, '.ts');
      if (!fs.existsSync(source)) fs.rmSync(p);
    }
  }
}
pruneStale('dist');

await esbuild.build({
  entryPoints: ['agent/main.ts'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: 'dist/bundle/tp-agent.cjs',
  minify: true,
  sourcemap: 'linked',
  // koffi carries a native module: it is loaded from node_modules at run time.
  external: ['koffi'],
  logLevel: 'warning',
});

if (fs.existsSync('bpf/build.sh')) execFileSync('bash', ['bpf/build.sh'], { stdio: 'inherit' });

const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
for (const bin of Object.values(pkg.bin)) {
  if (!fs.existsSync(bin)) continue;
  const text = fs.readFileSync(bin, 'utf8');
  if (!text.startsWith('#!')) fs.writeFileSync(bin, `#!/usr/bin/env node\n${text}`);
  fs.chmodSync(bin, 0o755);
}
