// The import rules of the tree, as one table, checked against the real imports of every source file and
// against the "May import:" line of each folder's README, so the rules the READMEs state cannot drift
// from the code again. An edge the design does not want but the code still has is listed in KNOWN_DEBT
// with what removes it; the test fails when such an edge disappears, so the list only shrinks.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APP_ENV_PREFIX, ENV } from '../agentconfig/env.js';

const root = path.resolve(import.meta.dirname, '..', '..');

/**
 * What each folder's shipped code may import (folders, or single files where only one file is the
 * contract). Tests (`*.test.ts`, a `test/` folder) may import more; benches and test/ are harnesses.
 */
const ALLOWED: Record<string, string[]> = {
  agent: [
    'agentconfig',
    'bpf/steering-map.ts',
    'http-filter',
    'logging',
    'netaddr',
    'probes',
    'rpc',
    'sys',
    'tunnel',
    'version',
  ],
  agentconfig: ['logging', 'netaddr', 'probes'],
  bpf: ['agentconfig', 'logging', 'netaddr', 'version'],
  cli: ['command', 'daemons/root/launch.ts', 'http-filter', 'kube', 'logging', 'netaddr', 'rpc', 'version'],
  command: ['netaddr'],
  daemons: ['command', 'dns', 'kube', 'logging', 'netaddr', 'rpc', 'sys', 'tunnel', 'version', 'vif'],
  dns: ['command', 'logging', 'netaddr'],
  'http-filter': ['rpc'],
  image: ['agent/node-flags.ts', 'manager/node-flags.ts', 'netaddr', 'version'],
  'init-container': ['bpf', 'command', 'logging', 'netaddr', 'version'],
  kind: ['command', 'image', 'lab', 'logging', 'netaddr', 'version'],
  kube: ['agentconfig', 'command', 'logging', 'netaddr', 'rpc', 'spdy', 'tunnel'],
  lab: ['command', 'image', 'logging', 'netaddr', 'version'],
  logging: [],
  manager: [
    'agentconfig',
    'dns',
    'http-filter',
    'kube',
    'logging',
    'netaddr',
    'probes',
    'rpc',
    'sys',
    'tunnel',
    'version',
  ],
  netaddr: [],
  probes: ['netaddr'],
  rpc: ['logging', 'netaddr'],
  spdy: [],
  sys: ['logging'],
  testbed: ['bpf/support.ts', 'command', 'dns', 'lab', 'rpc'],
  tunnel: ['logging', 'netaddr', 'rpc', 'version'],
  version: [],
  vif: ['bpf/libbpf.ts', 'command', 'logging', 'netaddr'],
};

/** Harnesses: they drive the real bins and may import what they need, but no folder's private test/. */
const HARNESSES = new Set(['bench', 'demo', 'test']);

/** Edges the design does not want, still in the code: what removes each. */
const KNOWN_DEBT: Record<string, string> = {};

interface Edge {
  from: string;
  file: string;
  target: string;
}

function sources(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'dist' || e.name === 'testdata' || e.name.startsWith('.'))
      continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sources(p, out);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Relative imports, static and dynamic, of every .ts file, as paths from the checkout's root. */
function edges(): Edge[] {
  const out: Edge[] = [];
  const folders = [...Object.keys(ALLOWED), ...HARNESSES].filter((f) => fs.existsSync(path.join(root, f)));
  for (const folder of folders) {
    for (const file of sources(path.join(root, folder))) {
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g)) {
        const target = path.relative(root, path.resolve(path.dirname(file), m[1]!)).replace(/\.js$/, '.ts');
        out.push({ from: folder, file: path.relative(root, file), target });
      }
    }
  }
  return out;
}

const isTestFile = (file: string) =>
  file.endsWith('.test.ts') || file.split('/').some((p) => p === 'test' || p === 'fixtures');
const top = (p: string) => p.split('/')[0]!;
const all = edges();

test('shipped code imports only what its folder may import', () => {
  const bad: string[] = [];
  for (const e of all) {
    const to = top(e.target);
    if (to === e.from || HARNESSES.has(e.from) || isTestFile(e.file)) continue;
    const allowed = ALLOWED[e.from] ?? [];
    if (allowed.some((a) => a === to || e.target === a)) continue;
    if (KNOWN_DEBT[`${e.from} -> ${to}`]) continue;
    bad.push(
      `${e.file} imports ${e.target} (${e.from}/ may import: ${allowed.join(', ') || 'nothing of tp'})`,
    );
  }
  assert.equal(bad, []);
});

test('no file imports another folder’s private test/ folder', () => {
  const bad = all
    .filter((e) => {
      const parts = e.target.split('/');
      return top(e.target) !== e.from && top(e.target) !== 'test' && parts.slice(1, -1).includes('test');
    })
    .map((e) => `${e.file} imports ${e.target}: move what it needs to testbed/`);
  assert.equal(bad, []);
});

test('every known debt is still in the code (remove it from the list when it is paid)', () => {
  for (const debt of Object.keys(KNOWN_DEBT)) {
    const [from, to] = debt.split(' -> ');
    assert.ok(
      all.some((e) => e.from === from && top(e.target) === to && !isTestFile(e.file)),
      `${debt} is gone: delete it from KNOWN_DEBT`,
    );
  }
});

/** The folder an ALLOWED entry names (`bpf/steering-map.ts` → `bpf`). */
const folderOf = (entry: string) => top(entry);

/** A cycle of folders in the rules (ALLOWED and KNOWN_DEBT together), or undefined. */
function folderCycle(): string[] | undefined {
  const next = new Map<string, Set<string>>();
  for (const [from, allowed] of Object.entries(ALLOWED))
    next.set(from, new Set(allowed.map(folderOf).filter((to) => to !== from)));
  for (const debt of Object.keys(KNOWN_DEBT)) {
    const [from, to] = debt.split(' -> ') as [string, string];
    next.set(from, new Set([...(next.get(from) ?? []), to]));
  }
  const done = new Set<string>();
  const walk = (folder: string, stack: string[]): string[] | undefined => {
    const at = stack.indexOf(folder);
    if (at >= 0) return [...stack.slice(at), folder];
    if (done.has(folder)) return undefined;
    for (const to of next.get(folder) ?? []) {
      const cycle = walk(to, [...stack, folder]);
      if (cycle) return cycle;
    }
    done.add(folder);
    return undefined;
  };
  for (const folder of next.keys()) {
    const cycle = walk(folder, []);
    if (cycle) return cycle;
  }
  return undefined;
}

test('the folders import each other without a cycle', () => {
  const cycle = folderCycle();
  assert.equal(cycle, undefined, `import cycle: ${cycle?.join(' -> ')}`);
});

/**
 * The agent's environment names are agentconfig/'s: shipped code elsewhere names them through `ENV` (reading
 * `env.NAME` of another contract is not a literal). TP_LOG_LEVEL is every tp process's (logging/), not only
 * the agent's.
 */
test('no string literal of an agent env name outside agentconfig/', () => {
  const names = Object.values(ENV).filter((n) => n !== ENV.logLevel);
  const word = new RegExp(`(?<![.\\w])(${names.map((n) => `${n}(?!\\w)`).join('|')}|${APP_ENV_PREFIX})`, 'g');
  const bad: string[] = [];
  for (const folder of Object.keys(ALLOWED)) {
    if (folder === 'agentconfig' || !fs.existsSync(path.join(root, folder))) continue;
    for (const abs of sources(path.join(root, folder))) {
      const file = path.relative(root, abs);
      if (isTestFile(file)) continue;
      const code = fs
        .readFileSync(abs, 'utf8')
        .replace(/\/\*[\s\S]*?\*\//g, '')
        .replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
      for (const m of code.matchAll(word))
        bad.push(`${file}: ${m[1]} (name it with ENV from agentconfig/env.ts)`);
    }
  }
  assert.equal(bad, []);
});

/** Up to the first full stop outside backticks: what follows ("Not `rpc/`…") is commentary. */
function firstSentence(text: string): string {
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '`') quoted = !quoted;
    else if (!quoted && text[i] === '.' && (i + 1 === text.length || /\s/.test(text[i + 1]!)))
      return text.slice(0, i);
  }
  return text;
}

test('each folder README states the same rule in its "May import:" line', () => {
  const bad: string[] = [];
  for (const [folder, allowed] of Object.entries(ALLOWED)) {
    const readme = path.join(root, folder, 'README.md');
    if (!fs.existsSync(readme)) continue;
    const text = fs.readFileSync(readme, 'utf8');
    const at = text.search(/^May import: /m);
    if (at < 0) {
      bad.push(
        `${folder}/README.md has no "May import:" line (say: ${allowed.join(', ') || 'nothing of tp'})`,
      );
      continue;
    }
    const stated = new Set<string>();
    const paragraph = text.slice(at + 'May import: '.length).split('\n\n')[0]!;
    for (const t of firstSentence(paragraph).matchAll(/`([a-z-]+)\/([^`]*)`/g)) {
      if (!(t[1]! in ALLOWED)) continue;
      stated.add(t[2] && /\.ts$/.test(t[2]) ? `${t[1]}/${t[2]}` : t[1]!);
    }
    const want = [...allowed].sort();
    const got = [...stated].sort();
    if (want.join() !== got.join())
      bad.push(
        `${folder}/README.md says ${got.join(', ') || 'nothing'}; the rule is ${want.join(', ') || 'nothing'}`,
      );
  }
  assert.equal(bad, []);
});

test.run();
