// tp-agent-holder for real, on loopback: the holder (dist/agent/holder-main.js) runs the real agent as its
// worker with no manager (everything passes through to an app in this process). kill -9 of the worker: a
// connection made before the new worker listens waits in the backlog and is answered by the app, never
// refused; the probe port too. SIGTERM ends both with exit 0; a worker that keeps dying ends the holder.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { freePort, freePorts } from '../testbed/loopback.js';
import { pidExists } from '../testbed/processes.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const HOLDER = path.join(here, 'holder-main.js');
const AGENT = path.join(here, 'main.js');

/** One HTTP GET on a new connection: the body, or the error's code (ECONNREFUSED, ECONNRESET, …). */
function get(port: number, pathname = '/', onConnect?: () => void): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(body.trim()));
    });
    req.on('socket', (s) => s.once('connect', () => onConnect?.()));
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** The holder's log, line by line as it arrives, each with its position so that orders can be compared. */
class Holder {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  constructor(readonly child: ChildProcess) {
    let rest = '';
    child.stderr!.on('data', (d) => {
      rest += d;
      const parts = rest.split('\n');
      rest = parts.pop()!;
      this.lines.push(...parts);
      for (const w of this.waiters.splice(0)) w();
    });
    this.exited = new Promise((r) => child.once('exit', (code) => r(code)));
  }

  /** Resolves with the index of the first line from `from` on that matches. */
  async line(re: RegExp, from = 0, timeoutMs = 15_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex((l, j) => j >= from && re.test(l));
      if (i >= 0) return i;
      if (Date.now() > deadline) throw new Error(`no log line ${re} in:\n${this.lines.join('\n')}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  /** Ends the holder and its worker whatever happened (both are in the process group it leads). */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid)
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
  }
}

function startHolder(worker: string[], env: Record<string, string>): Holder {
  const child = spawn(process.execPath, [HOLDER, ...worker], {
    env: { PATH: process.env.PATH ?? '', TP_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  return new Holder(child);
}

test('kill -9 of the worker: a connection made in the gap waits and is answered by the app', async () => {
  const app = http.createServer((_req, res) => res.end('app\n'));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as net.AddressInfo).port;
  const [agentPort, probePort] = await freePorts(2);
  const holder = startHolder([process.execPath, AGENT], {
    TP_MANAGER_ADDRESS: '127.0.0.1:1',
    TP_WORKLOAD_NAME: 'echo',
    TP_POD_NAME: 'echo-0',
    TP_POD_IP: '127.0.0.1',
    TP_PORTS: `${appPort}:${agentPort}`,
    TP_PROBE_PORT: String(probePort),
  });
  try {
    const first = await holder.line(/tp-agent started/);
    assert.is(await get(agentPort), 'app');
    const pid = Number(
      /worker started pid=(\d+)/.exec(holder.lines.find((l) => /worker started/.test(l))!)![1],
    );
    assert.ok(first >= 0 && pid > 0);

    process.kill(pid, 'SIGKILL');
    // The holder has reaped the worker: nobody listens until the new worker's listeners are up.
    const died = await holder.line(/the agent worker died/);
    assert.match(holder.lines[died]!, /exit="signal SIGKILL"/);
    let connectedAt = -1;
    let probeConnectedAt = -1;
    const answers = Promise.all([
      get(agentPort, '/', () => {
        connectedAt = holder.lines.length;
      }),
      get(probePort, '/tp-probe/agent', () => {
        probeConnectedAt = holder.lines.length;
      }),
    ]);
    const relistened = await holder.line(/agent\/listener: listening/, died + 1);
    assert.equal(await answers, ['app', 'tp-agent: listening']);
    assert.ok(
      connectedAt >= 0 && connectedAt <= relistened && probeConnectedAt <= relistened,
      `connected (log line ${connectedAt}, probe ${probeConnectedAt}) before the new worker listened (line ${relistened})`,
    );
    assert.not.ok(pidExists(pid), 'the killed worker is gone');
    const second = Number(
      /worker started pid=(\d+)/.exec(holder.lines.slice(died).find((l) => /worker started/.test(l))!)![1],
    );
    assert.is.not(second, pid);

    // SIGTERM: forwarded, the worker stops (Depart, exit 0) and the holder follows with its code.
    process.kill(holder.child.pid!, 'SIGTERM');
    assert.is(await holder.exited, 0);
    await holder.line(/agent worker stopped .*exit="exit code 0"/);
    assert.not.ok(pidExists(second), 'the worker stopped with the holder');
    assert.is(await get(agentPort), 'ECONNREFUSED');
  } finally {
    holder.kill();
    app.close();
  }
});

test('a worker that keeps dying ends the holder with its exit code', async () => {
  const port = await freePort();
  const holder = startHolder([process.execPath, '-e', 'process.exit(3)'], { TP_PORTS: `8080:${port}` });
  try {
    assert.is(await holder.exited, 3);
    assert.is(holder.lines.filter((l) => /agent worker started/.test(l)).length, 5);
    await holder.line(/keeps dying: stopping.*deathsInWindow=5/);
  } finally {
    holder.kill();
  }
});

test('an orphan of a dead worker is reaped by the holder, not left a zombie', async () => {
  const port = await freePort();
  const mark = path.join(os.tmpdir(), `tp-holder-orphan-${process.pid}`);
  fs.rmSync(mark, { force: true });
  // The first worker starts a child that outlives it briefly (as a mount's sftp-server does) and dies; the
  // second one stays.
  const worker = `
    const fs = require('fs');
    if (!fs.existsSync(process.env.MARK)) {
      const c = require('child_process').spawn('sleep', ['0.3'], { detached: true, stdio: 'ignore' });
      fs.writeFileSync(process.env.MARK, String(c.pid));
      process.exit(3);
    }
    setInterval(() => {}, 1000);`;
  const holder = startHolder([process.execPath, '-e', worker], { TP_PORTS: `8080:${port}`, MARK: mark });
  try {
    await holder.line(/agent worker died/);
    const orphan = Number(fs.readFileSync(mark, 'utf8'));
    assert.ok(orphan > 0);
    await holder.line(new RegExp(`reaped orphaned processes pids=${orphan}\\b`));
    assert.not.ok(fs.existsSync(`/proc/${orphan}`), 'no zombie left: the pid is gone');
  } finally {
    holder.kill();
    fs.rmSync(mark, { force: true });
  }
});

test('a port in use: the holder says which and exits 1 before starting a worker', async () => {
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '::', r));
  const port = (busy.address() as net.AddressInfo).port;
  const holder = startHolder([process.execPath, '-e', ''], { TP_PORTS: `8080:${port}` });
  try {
    assert.is(await holder.exited, 1);
    assert.match(
      holder.lines.join('\n'),
      `tp-agent-holder: cannot listen on agent port ${port}: the port is in use`,
    );
    assert.not.match(holder.lines.join('\n'), /worker started/);
  } finally {
    holder.kill();
    busy.close();
  }
});

test.run();
