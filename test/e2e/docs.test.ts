// Docs are tests: every command line of README.md and docs/*.md runs, in page order, through the bins of
// this checkout installed as users install it (`npm pack`, then `npm install -g` of the tarball into a
// temporary prefix), on the lab. The markdown convention (skip, setup, then, cleanup, not-run, `# fails:`)
// is in test/e2e/README.md; test/docs/pages.ts turns a page into steps.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as assert from 'uvu/assert';
import { runCommand } from '../../lab/command.js';
import { type Page, parsePage, type Step } from '../docs/pages.js';
import { repoRoot } from './cluster.js';
import { clusterSuite } from './suite.js';

const { test, cluster } = await clusterSuite('docs are tests');

/** The pages, in the order a reader meets them: README.md, then docs/ by name. */
function pageFiles(): string[] {
  const docs = fs
    .readdirSync(path.join(repoRoot, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`);
  // TP_DOCS_PAGES=kubernetes,lab: only the pages whose path contains one of these (while writing a page).
  const only = (process.env.TP_DOCS_PAGES ?? '').split(',').filter(Boolean);
  return ['README.md', ...docs].filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const tail = (text: string, n = 15) => text.trimEnd().split('\n').slice(-n).join('\n    ');

/** npm pack of the checkout, npm install -g of the tarball into `dir/prefix`; returns the prefix's bin/. */
async function installPackage(dir: string): Promise<string> {
  const t0 = Date.now();
  const pack = await runCommand(['npm', 'pack', repoRoot, '--pack-destination', dir, '--silent'], {
    timeoutMs: 180_000,
  }).catch((e) => {
    throw new Error(`npm pack failed: ${(e as Error).message}`);
  });
  const tarball = path.join(dir, pack.stdout.trim().split('\n').pop()!);
  const t1 = Date.now();
  const prefix = path.join(dir, 'prefix');
  // As README.md says to install it. Offline from npm's cache when it holds every dependency, else the
  // registry fills the cache (the next run is offline).
  const install = (mode: string) =>
    runCommand(['npm', 'install', '-g', '--ignore-scripts', mode, '--prefix', prefix, tarball], {
      check: false,
      timeoutMs: 300_000,
    });
  let mode = '--offline';
  let r = await install(mode);
  if (r.code !== 0 && /ENOTCACHED/.test(r.stderr)) {
    mode = '--prefer-offline';
    r = await install(mode);
  }
  if (r.code !== 0)
    throw new Error(`npm install -g ${tarball} failed (exit ${r.code}):\n    ${tail(r.stderr)}`);
  const warnings = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /^npm warn/i.test(l));
  say(
    `# docs: npm pack ${((t1 - t0) / 1000).toFixed(1)} s (${(fs.statSync(tarball).size / 2 ** 20).toFixed(1)} MiB), npm install -g ${mode} ${((Date.now() - t1) / 1000).toFixed(1)} s`,
  );
  assert.equal(warnings, [], 'the global install prints no warning a user has to act on');
  return path.join(prefix, 'bin');
}

/** A bash process a page's lines run in one after the other (so `eval`, exports and `&` work as typed). */
class PageShell {
  private readonly child: ChildProcess;
  private out = '';
  private exited = false;
  private readonly marker = `__docs_test_${process.pid}_${Math.random().toString(36).slice(2)}__`;
  private backgrounds = 0;

  constructor(
    argv: string[],
    env: NodeJS.ProcessEnv,
    private readonly cwd: string,
  ) {
    this.child = spawn(argv[0]!, [...argv.slice(1)], {
      cwd,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const add = (d: string) => {
      this.out += d;
    };
    this.child.stdout!.setEncoding('utf8').on('data', add);
    this.child.stderr!.setEncoding('utf8').on('data', add);
    this.child.on('close', () => {
      this.exited = true;
    });
    this.child.stdin!.on('error', () => {});
  }

  /** Runs one line; resolves to its exit status and everything it printed. */
  async run(command: string, timeoutMs: number): Promise<{ code: number; output: string }> {
    this.out = '';
    // stdin from /dev/null: a command must not read the rest of the page from the shell's input.
    this.child.stdin!.write(`{\n${command}\n} </dev/null 2>&1; printf '\\n%s %d\\n' ${this.marker} $?\n`);
    const done = new RegExp(`\\n?${this.marker} (\\d+)\\n`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = done.exec(this.out);
      if (m) return { code: Number(m[1]), output: this.out.slice(0, m.index) };
      if (this.exited) return { code: -1, output: `${this.out}\n(the page's shell exited)` };
      if (Date.now() > deadline)
        return { code: -1, output: `${this.out}\n(no answer within ${timeoutMs / 1000} s)` };
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Starts a `&` line; its output goes to a log file of its own, shown if the page fails. */
  start(command: string): Promise<{ code: number; output: string }> {
    const log = path.join(this.cwd, `background-${++this.backgrounds}.log`);
    return this.run(`( ${command} ) </dev/null >${log} 2>&1 &`, 10_000);
  }

  backgroundLogs(): string {
    const logs: string[] = [];
    for (let i = 1; i <= this.backgrounds; i++) {
      const f = path.join(this.cwd, `background-${i}.log`);
      if (fs.existsSync(f)) logs.push(`background ${i}:\n    ${tail(fs.readFileSync(f, 'utf8'))}`);
    }
    return logs.join('\n  ');
  }

  /** Stops the `&` lines, ends the shell and whatever it left in its process group. */
  async close(): Promise<void> {
    if (!this.exited) {
      await this.run('for p in $(jobs -p); do kill $p 2>/dev/null; done; wait', 15_000);
      this.child.stdin!.end('exit 0\n');
      const t0 = Date.now();
      while (!this.exited && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 100));
    }
    try {
      process.kill(-this.child.pid!, 'SIGKILL');
    } catch {
      // The group is gone already.
    }
  }
}

function describeStep(page: Page, s: Step): string {
  return `${page.file}:${s.line}  $ ${s.command}`;
}

if (cluster) {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-docs-'));
  let bin = '';
  const namespaces: string[] = [];

  test.before(async () => {
    bin = await installPackage(scratch);
    say(`# docs: installed bins: ${fs.readdirSync(bin).join(', ')}`);
  });

  test.after(async () => {
    for (const ns of namespaces) await runCommand(['ip', 'netns', 'del', ns], { check: false });
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  for (const file of pageFiles()) {
    test(file, async () => {
      assert.ok(bin, 'the package is installed');
      const page = parsePage(file, fs.readFileSync(path.join(repoRoot, file), 'utf8'));
      const dir = fs.mkdtempSync(path.join(scratch, `${path.basename(file, '.md')}-`));
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        PATH: `${bin}:${process.env.PATH ?? ''}`,
        // This page's own daemons: never another test's (or a user's) socket and logs.
        TP_RUN_DIR: path.join(dir, 'run'),
        TP_LOG_DIR: path.join(dir, 'logs'),
      };
      let argv = ['bash', '--noprofile', '--norc'];
      if (page.place === 'workstation') {
        if (cluster.kind !== 'lab')
          throw new Error(`${file} runs on the lab's workstation; this run has ${cluster.kind}`);
        argv = [path.join(bin, 'tp-lab'), 'exec', '--', ...argv];
      } else if (page.place === 'netns') {
        const ns = `tp-docs-${process.pid}-${namespaces.length}`;
        await runCommand(['ip', 'netns', 'add', ns]);
        namespaces.push(ns);
        await runCommand(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
        argv = ['ip', 'netns', 'exec', ns, ...argv];
      }
      const runnable = page.steps.filter((s) => s.kind !== 'skip').length;
      say(`# ${file}: ${page.steps.length} lines (${runnable} run) on ${page.place}`);
      const shell = new PageShell(argv, env, dir);
      try {
        for (const s of page.steps) {
          if (s.kind === 'skip') {
            say(`#   skip ${describeStep(page, s)}  (${s.reason})`);
            continue;
          }
          const t0 = Date.now();
          const r =
            s.kind === 'background' ? await shell.start(s.command) : await shell.run(s.command, 420_000);
          const seconds = ((Date.now() - t0) / 1000).toFixed(1);
          const label = { hidden: 'hidden', background: 'start', fail: 'must fail', run: 'run' }[s.kind];
          say(`#   ${label} ${describeStep(page, s)}  (exit ${r.code}, ${seconds} s)`);
          const context = () =>
            `${describeStep(page, s)}: exit ${r.code}, output:\n    ${tail(r.output)}${
              shell.backgroundLogs() ? `\n  ${shell.backgroundLogs()}` : ''
            }`;
          if (s.kind === 'fail') {
            if (r.code === 0 || r.code === -1) throw new Error(`expected a failure: ${context()}`);
            if (!r.output.includes(s.expect))
              throw new Error(`expected "${s.expect}" in the output: ${context()}`);
          } else {
            if (r.code !== 0) throw new Error(context());
            if (s.kind === 'run' && s.expect && !r.output.includes(s.expect))
              throw new Error(`expected "${s.expect}" in the output: ${context()}`);
          }
        }
      } finally {
        for (const command of [...page.cleanup, 'tp quit']) {
          const r = await shell.run(command, 420_000);
          say(`#   cleanup ${command}  (exit ${r.code})`);
          if (r.code !== 0) say(`#     ${tail(r.output, 5)}`);
        }
        await shell.close();
      }
    });
  }
}

test.run();
