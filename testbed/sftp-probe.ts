// A minimal SFTP v3 client for tests: INIT, then one request at a time, each answer decoded to what a
// test asserts (a status code, or the kind of answer). It plays an authenticated mount client that does
// not go through the kernel (sshfs normalizes `..` and never sends absolute paths): agent/file-server's
// unit test drives it on a socket, test/e2e/mounts runs it as the "sshfs" the user daemon starts
// (`node sftp-probe.js RESULT_FILE`: SFTP on stdin/stdout, the answers written to RESULT_FILE as JSON).
import * as fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';

export interface ProbeRequest {
  op: 'open' | 'stat' | 'lstat' | 'realpath' | 'opendir' | 'symlink';
  path: string;
  /** open: SSH_FXF_* flags (1 READ, 2 WRITE, 8 CREAT); default READ. symlink: the target. */
  flags?: number;
  target?: string;
}

export interface ProbeAnswer {
  op: string;
  path: string;
  /** status (with code and message), handle, name (with the first name), attrs, data. */
  kind: string;
  code?: number;
  message?: string;
  name?: string;
}

const OPS = { open: 3, lstat: 7, opendir: 11, realpath: 16, stat: 17, symlink: 20 } as const;
const KINDS: Record<number, string> = {
  101: 'status',
  102: 'handle',
  103: 'data',
  104: 'name',
  105: 'attrs',
};

const str = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  const n = Buffer.alloc(4);
  n.writeUInt32BE(b.length);
  return Buffer.concat([n, b]);
};
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const packet = (type: number, body: Buffer) =>
  Buffer.concat([u32(body.length + 1), Buffer.from([type]), body]);

export async function probe(
  input: Readable,
  output: Writable,
  requests: ProbeRequest[],
): Promise<ProbeAnswer[]> {
  let pending = Buffer.alloc(0);
  const waiting: ((b: Buffer) => void)[] = [];
  const queued: Buffer[] = [];
  input.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
      const p = pending.subarray(4, 4 + pending.readUInt32BE(0));
      pending = pending.subarray(4 + p.length);
      const w = waiting.shift();
      if (w) w(p);
      else queued.push(p);
    }
  });
  const ended = new Promise<never>((_, reject) =>
    input.once('end', () => reject(new Error('the server hung up'))),
  );
  const next = () =>
    Promise.race([
      new Promise<Buffer>((resolve) => {
        const q = queued.shift();
        if (q) resolve(q);
        else waiting.push(resolve);
      }),
      ended,
    ]);
  output.write(packet(1, u32(3)));
  const version = await next();
  if (version[0] !== 2) throw new Error(`expected VERSION, got type ${version[0]}`);
  const answers: ProbeAnswer[] = [];
  let id = 1;
  for (const r of requests) {
    const args =
      r.op === 'open'
        ? [str(r.path), u32(r.flags ?? 1), u32(0)]
        : r.op === 'symlink'
          ? [str(r.path), str(r.target ?? '/')]
          : [str(r.path)];
    output.write(packet(OPS[r.op], Buffer.concat([u32(id), ...args])));
    const a = await next();
    const answer: ProbeAnswer = { op: r.op, path: r.path, kind: KINDS[a[0]!] ?? String(a[0]) };
    if (a[0] === 101) {
      answer.code = a.readUInt32BE(5);
      const n = a.readUInt32BE(9);
      answer.message = a.subarray(13, 13 + n).toString('utf8');
    } else if (a[0] === 104 && a.readUInt32BE(5) > 0) {
      answer.name = a.subarray(13, 13 + a.readUInt32BE(9)).toString('utf8');
    }
    answers.push(answer);
    id++;
  }
  return answers;
}

/** The requests test/e2e/mounts makes: escapes with `..`, absolute paths outside the volumes. */
export const ESCAPES: ProbeRequest[] = [
  { op: 'realpath', path: '.' },
  { op: 'open', path: '../../../etc/passwd' },
  { op: 'open', path: '/etc/passwd' },
  { op: 'stat', path: '/var/run/secrets/tp.dev/manager/token' },
  { op: 'open', path: '/proc/self/environ' },
  { op: 'opendir', path: '/' },
  { op: 'opendir', path: '..' },
  { op: 'symlink', path: 'link', target: '/etc/passwd' },
];

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [resultFile, ...rest] = process.argv.slice(2);
  const extra = rest.map((p): ProbeRequest => ({ op: 'stat', path: p }));
  probe(process.stdin, process.stdout, [...ESCAPES, ...extra]).then(
    (answers) => {
      fs.writeFileSync(resultFile!, JSON.stringify(answers, null, 2));
      process.exit(1); // not a mount: the daemon says so and ends the intercept's mount attempt
    },
    (e: Error) => {
      fs.writeFileSync(resultFile!, JSON.stringify({ error: e.message }));
      process.exit(1);
    },
  );
}
