// The lab's images for real: built by buildLabImages (a second call reuses them), imported into a scratch
// containerd and run: pause reaps orphans and ends with 0 on SIGTERM, CoreDNS starts from its
// entrypoint, echo answers HTTP, the shell has sh, curl and node. CoreDNS is the lab's build when it is
// cached (lab/build.sh), else a stand-in compiled here that only reports a version and waits.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as assert from 'uvu/assert';
import { waitFor } from '../../../command/wait.js';
import { containerdSuite, ScratchContainerd } from '../../../testbed/containerd.js';
import { freePort } from '../../../testbed/loopback.js';
import { VERSION } from '../../../version/version.js';
import { cachedBinDir } from '../../binaries.js';
import { runCommand } from '../../command.js';
import { buildLabImages, type LabImage, type LabImageKey } from '../build.js';

const { test, ready } = containerdSuite('lab images', ['skopeo', 'gcc', 'nsenter']);

let dir = '';
let images: Record<LabImageKey, LabImage>;
let ctd: ScratchContainerd | undefined;
let realCoreDns = false;

/** The lab's CoreDNS when built, else a static stand-in that answers -version like it. */
async function corednsBinary(): Promise<string> {
  const lab = path.join(cachedBinDir(), 'coredns');
  if (fs.existsSync(lab)) {
    realCoreDns = true;
    return lab;
  }
  const source = path.join(dir, 'coredns.c');
  fs.writeFileSync(
    source,
    [
      '#include <stdio.h>',
      '#include <string.h>',
      '#include <unistd.h>',
      'int main(int argc, char **argv) {',
      '  puts("CoreDNS-0.0.0-standin"); fflush(stdout);',
      '  if (argc > 1 && strcmp(argv[1], "-version") == 0) return 0;',
      '  for (;;) pause();',
      '}',
      '',
    ].join('\n'),
  );
  const binary = path.join(dir, 'coredns');
  await runCommand(['gcc', '-static', '-O2', '-o', binary, source], { timeoutMs: 60_000 });
  return binary;
}

/** Processes whose parent is `pid`, with their state (Z: a zombie nobody reaped). */
function children(pid: number): { pid: number; state: string }[] {
  const found: { pid: number; state: string }[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) found.push({ pid: Number(entry), state: fields[0]! });
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

if (ready) {
  test.before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-lab-images-'));
    const coredns = await corednsBinary();
    const out = path.join(dir, 'images');
    const built = await buildLabImages(out, { coredns, tp: true });
    images = Object.fromEntries(built.map((i) => [i.key, i])) as Record<LabImageKey, LabImage>;
    ctd = await ScratchContainerd.start('labimg');
  });

  test.after(async () => {
    await ctd?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the images with their names, tp included; a second call reuses them in well under a second', async () => {
    assert.equal(Object.keys(images).sort(), ['coredns', 'echo', 'pause', 'shell', 'tp']);
    assert.is(images.tp.name, `docker.io/tp/tp:${VERSION}`);
    assert.is(images.pause.name, 'registry.k8s.io/pause:3.10');
    assert.is(images.echo.name, 'docker.io/lab/echo:1');
    assert.is(images.shell.name, 'docker.io/lab/shell:1');
    assert.match(images.coredns.name, /^docker\.io\/lab\/coredns:\d+\.\d+\.\d+/);
    const started = Date.now();
    const again = await buildLabImages(path.dirname(images.echo.archive), {
      coredns: await corednsBinary(),
      tp: true,
    });
    const ms = Date.now() - started;
    assert.ok(
      again.every((i) => i.reused),
      JSON.stringify(again.map((i) => [i.key, i.reused])),
    );
    assert.ok(ms < 1000, `the warm call took ${ms} ms`);
    assert.equal(
      again.map((i) => i.manifestDigest),
      Object.values(images).map((i) => i.manifestDigest),
    );
  });

  test('skopeo reads each archive; all import into containerd under their names', async () => {
    for (const image of Object.values(images)) {
      const r = await runCommand(['skopeo', 'inspect', `oci-archive:${image.archive}`], {
        timeoutMs: 60_000,
      });
      assert.is(JSON.parse(r.stdout).Digest, image.manifestDigest, image.name);
      const imported = await ctd!.importArchive(image.archive);
      assert.is(imported.code, 0, imported.stderr);
    }
    const list = (await ctd!.ctr(['images', 'ls', '-q'])).stdout.split('\n');
    for (const image of Object.values(images))
      assert.ok(list.includes(image.name), `${image.name} in ${list}`);
  });

  test('pause reaps the orphans of its PID namespace and ends with 0 on SIGTERM', async () => {
    const pause = ctd!.start(images.pause.name, []);
    const pid = await waitFor('the pause task', () => pause.hostPid(), 15_000);
    // Two orphans: their parent shell exits at once, so they are handed to the namespace's PID 1. (Their
    // output goes elsewhere, or nsenter's pipes would stay open until they end.)
    const orphan = '(sleep 1 </dev/null >/dev/null 2>&1 &)';
    const orphans = await runCommand(
      ['nsenter', '-t', String(pid), '-p', '--', 'sh', '-c', `${orphan}; ${orphan}`],
      {
        check: false,
      },
    );
    assert.is(orphans.code, 0, orphans.stderr);
    assert.is(children(pid).length, 2, 'the orphans were handed to pause');
    await waitFor(
      () => `pause to reap its children (${JSON.stringify(children(pid))})`,
      () => children(pid).length === 0,
      5_000,
    );
    await pause.signal('SIGTERM');
    const end = await pause.exited;
    assert.is(end.code, 0, end.stdout + end.stderr);
  });

  test('CoreDNS runs from its entrypoint and reports its version', async () => {
    const version = await ctd!.run(images.coredns.name, ['/coredns', '-version']);
    assert.is(version.code, 0, version.stderr);
    assert.match(version.stdout, /CoreDNS-/);
    // No arguments: the image's entrypoint (/coredns) with CoreDNS's defaults, in its own network namespace.
    const server = ctd!.start(images.coredns.name, []);
    await waitFor(
      () => `CoreDNS to start (output: ${server.output()})`,
      () => /CoreDNS-/.test(server.output()),
      15_000,
    );
    await server.signal('SIGTERM');
    await server.exited;
    if (!realCoreDns)
      process.stdout.write('# lab images: CoreDNS was a stand-in (lab/build.sh has not built it)\n');
  });

  test('echo answers $TEXT on $PORT; the shell image has curl, node and sh', async () => {
    const port = await freePort();
    const echo = ctd!.start(images.echo.name, [], {
      netHost: true,
      env: { PORT: String(port), TEXT: 'hello lab' },
    });
    const body = await waitFor(
      () => `lab/echo on 127.0.0.1:${port} (output: ${echo.output()})`,
      async () => (await fetch(`http://127.0.0.1:${port}/`)).text(),
      15_000,
    );
    assert.is(body, 'hello lab\n');
    // curl writes the body into a directory of the host: `ctr run` can lose the stdout of a container
    // that ends within milliseconds (seen once in CI: exit 0, no output), a file cannot.
    const out = fs.mkdtempSync(path.join(dir, 'curl-'));
    const curl = await ctd!.run(
      images.shell.name,
      ['curl', '-s', '-o', '/out/body', `http://127.0.0.1:${port}/x`],
      { netHost: true, mounts: [`type=bind,src=${out},dst=/out,options=rbind:rw`] },
    );
    assert.is(curl.code, 0, curl.stderr);
    assert.is(fs.readFileSync(path.join(out, 'body'), 'utf8'), 'hello lab\n');
    await echo.signal('SIGTERM');
    assert.is((await echo.exited).code, 0, echo.output());

    // An e2e scenario's kind of server: node -e in a shell pod, reached with curl from the same pod.
    const script = [
      `node -e "require('http').createServer((q, s) => s.end('from node')).listen(8080)" & server=$!`,
      'for i in 1 2 3 4 5 6 7 8 9 10; do curl -s http://127.0.0.1:8080/ && break; sleep 0.3; done',
      'kill $server',
    ].join('\n');
    const shell = await ctd!.run(images.shell.name, ['sh', '-c', script]);
    assert.equal([shell.code, shell.stdout], [0, 'from node'], shell.stderr);
  });
}

test.run();
