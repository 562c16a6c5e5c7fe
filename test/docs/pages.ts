// Docs are tests: the command lines of a markdown page as the steps test/e2e/docs.test.ts runs, in page
// order. Pure: markdown in, steps out. The convention is in test/e2e/README.md ("Docs are tests").

/** Where a page's lines run: this host, the cluster's workstation, or a fresh network namespace. */
export type Place = 'host' | 'workstation' | 'netns';

export type Step =
  /** A line that must exit 0 (`expect`: text its output must contain, from `# prints: TEXT`). */
  | { kind: 'run'; line: number; command: string; expect?: string }
  /** A line that must exit non-zero with `expect` in its output (`# fails: TEXT`). */
  | { kind: 'fail'; line: number; command: string; expect: string }
  /** A line ending in `&`: started, and stopped when the page ends. */
  | { kind: 'background'; line: number; command: string }
  /** A line shown but not run, and why. */
  | { kind: 'skip'; line: number; command: string; reason: string }
  /** A hidden command from a `setup`/`then` directive: must exit 0. */
  | { kind: 'hidden'; line: number; command: string };

export interface Page {
  file: string;
  place: Place;
  steps: Step[];
  /** Hidden commands run when the page ends, also after a failure. */
  cleanup: string[];
}

const DIRECTIVE = /^<!--\s*docs-test:\s*(\S+)\s*(.*?)\s*-->\s*$/;
const FENCE = /^(\s*)(```+|~~~+)\s*([\w-]*)/;
const RUN_ALL = new Set(['sh', 'bash', 'shell']);
const PROMPT_ONLY = new Set(['', 'console', 'text']);

export class PageError extends Error {}

/** Splits a shell line at its first `#` comment outside quotes: [command, comment]. */
export function splitComment(line: string): [string, string] {
  let quote = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quote) {
      if (ch === quote) quote = '';
      else if (ch === '\\' && quote === '"') i++;
    } else if (ch === "'" || ch === '"') quote = ch;
    else if (ch === '\\') i++;
    else if (ch === '#' && (i === 0 || /\s/.test(line[i - 1]!)))
      return [line.slice(0, i).trimEnd(), line.slice(i + 1).trim()];
  }
  return [line.trimEnd(), ''];
}

/** One command line of a block as a step. */
export function lineStep(
  line: number,
  text: string,
  notRun: { prefix: string; reason: string }[],
): Step | null {
  const [command, comment] = splitComment(text.trim());
  if (!command) return null;
  const skipped = notRun.find((n) => command.startsWith(n.prefix));
  if (skipped) return { kind: 'skip', line, command, reason: skipped.reason };
  if (command.includes('…'))
    return { kind: 'skip', line, command, reason: 'illustrative: "…" stands for what you fill in' };
  const fails = /^fails:\s*(.+)$/.exec(comment);
  if (fails) return { kind: 'fail', line, command, expect: fails[1]! };
  if (/[^&]&$/.test(command)) return { kind: 'background', line, command: command.slice(0, -1).trimEnd() };
  const prints = /^prints:\s*(.+)$/.exec(comment);
  return prints ? { kind: 'run', line, command, expect: prints[1]! } : { kind: 'run', line, command };
}

interface Pending {
  skip?: string;
  setup: { line: number; command: string }[];
  notRun: { prefix: string; reason: string }[];
}

/** The steps of one page. Throws PageError for a directive it does not know (a typo must not skip). */
export function parsePage(file: string, markdown: string): Page {
  const lines = markdown.split('\n');
  const page: Page = { file, place: 'host', steps: [], cleanup: [] };
  let pending: Pending = { setup: [], notRun: [] };
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!;
    const directive = DIRECTIVE.exec(text.trim());
    if (directive) {
      const [, keyword, rest] = directive as unknown as [string, string, string];
      const where = `${file}:${i + 1}`;
      if (keyword === 'place') {
        if (rest !== 'host' && rest !== 'workstation' && rest !== 'netns')
          throw new PageError(`${where}: docs-test: place takes host, workstation or netns, not "${rest}"`);
        page.place = rest;
      } else if (keyword === 'skip') pending.skip = rest || 'illustrative';
      else if (keyword === 'setup') pending.setup.push({ line: i + 1, command: rest });
      else if (keyword === 'then') page.steps.push({ kind: 'hidden', line: i + 1, command: rest });
      else if (keyword === 'cleanup') page.cleanup.push(rest);
      else if (keyword === 'not-run') {
        const [prefix, reason] = rest.split(/\s+—\s+/);
        if (!prefix || !reason) throw new PageError(`${where}: docs-test: not-run PREFIX — REASON`);
        pending.notRun.push({ prefix, reason });
      } else
        throw new PageError(
          `${where}: unknown docs-test directive "${keyword}" (place, skip, setup, then, cleanup, not-run)`,
        );
      continue;
    }
    const fence = FENCE.exec(text);
    if (!fence) continue;
    const [, indent, marker, info] = fence as unknown as [string, string, string, string];
    const body: { line: number; text: string }[] = [];
    for (i++; i < lines.length && !lines[i]!.trimStart().startsWith(marker); i++)
      body.push({ line: i + 1, text: lines[i]!.slice(indent.length) });
    const runAll = RUN_ALL.has(info);
    if (!runAll && !PROMPT_ONLY.has(info)) {
      pending = { setup: [], notRun: [] };
      continue;
    }
    for (const s of pending.setup) page.steps.push({ kind: 'hidden', ...s });
    // Continuation lines (`\` at the end) join the next one; in a prompt block only `$ ` lines are commands.
    const commands: { line: number; text: string }[] = [];
    for (let j = 0; j < body.length; j++) {
      let { text: t } = body[j]!;
      const { line } = body[j]!;
      if (!runAll) {
        if (!t.startsWith('$ ')) continue;
        t = t.slice(2);
      }
      while (t.endsWith('\\') && j + 1 < body.length)
        t = `${t.slice(0, -1).trimEnd()} ${body[++j]!.text.trim()}`;
      commands.push({ line, text: t });
    }
    for (const c of commands) {
      const step = lineStep(c.line, c.text, pending.notRun);
      if (!step) continue;
      page.steps.push(
        pending.skip ? { kind: 'skip', line: c.line, command: step.command, reason: pending.skip } : step,
      );
    }
    pending = { setup: [], notRun: [] };
  }
  return page;
}
