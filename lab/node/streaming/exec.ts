// The remote command protocols (channel.k8s.io … v4.channel.k8s.io) over SPDY: the client opens one
// stream per channel (error, stdin, stdout, stderr, resize), we run the command once all expected
// streams are there, FIN stdout/stderr when the command's output ends, then report the result on the
// error stream (v4: a metav1.Status JSON; older versions: the message text) and close the session.
import type { ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import type { Writable } from 'node:stream';
import type { Logger } from '../../../logging/logger.js';
import type { SpdySession, SpdyStream } from './spdy-session.js';

export const STREAM_CREATION_TIMEOUT_MS = 30_000;

export interface ExecOptions {
  command: string[];
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

export type StreamType = 'error' | 'stdin' | 'stdout' | 'stderr' | 'resize';

/** The kubelet's query parameters (input/output/error/tty/command); "1" or "true" mean yes. */
export function parseExecOptions(query: URLSearchParams): ExecOptions | { error: string } {
  const flag = (name: string) => {
    const v = query.get(name);
    return v === '1' || v === 'true';
  };
  const options: ExecOptions = {
    command: query.getAll('command'),
    stdin: flag('input'),
    stdout: flag('output'),
    stderr: flag('error'),
    tty: flag('tty'),
  };
  if (options.command.length === 0) return { error: 'you must specify a command' };
  if (!options.stdin && !options.stdout && !options.stderr) {
    return { error: 'you must specify at least 1 of stdin, stdout, stderr' };
  }
  return options;
}

function supportsResize(protocol: string): boolean {
  return protocol !== 'channel.k8s.io' && protocol !== 'v2.channel.k8s.io';
}

/** The streams the client opens for these options; the command starts when all are there. */
export function expectedStreams(options: ExecOptions, protocol: string): Set<StreamType> {
  const types = new Set<StreamType>(['error']);
  if (options.stdin) types.add('stdin');
  if (options.stdout) types.add('stdout');
  // With a TTY there is no separate stderr: the terminal merges it.
  if (options.stderr && !options.tty) types.add('stderr');
  if (options.tty && supportsResize(protocol)) types.add('resize');
  return types;
}

export type ExecResult = { exitCode: number } | { signal: NodeJS.Signals } | { failure: string };

/** What the error stream carries at the end; undefined means nothing (success before v4). */
export function resultMessage(result: ExecResult, protocol: string): string | undefined {
  let status: Record<string, unknown>;
  if ('failure' in result) {
    const message = `error executing command in container: ${result.failure}`;
    status = {
      metadata: {},
      status: 'Failure',
      message: `Internal error occurred: ${message}`,
      reason: 'InternalError',
      details: { causes: [{ message }] },
      code: 500,
    };
  } else {
    const code = 'signal' in result ? 128 + (os.constants.signals[result.signal] ?? 0) : result.exitCode;
    if (code === 0) status = { metadata: {}, status: 'Success' };
    else {
      status = {
        metadata: {},
        status: 'Failure',
        message: `command terminated with non-zero exit code: exit status ${code}`,
        reason: 'NonZeroExitCode',
        // CauseType serializes as "reason"; the client parses the message as the exit code.
        details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
      };
    }
  }
  if (protocol === 'v4.channel.k8s.io') return JSON.stringify(status);
  return status.status === 'Success' ? undefined : String(status.message);
}

/**
 * Starts the command in the container; the caller owns namespaces, env and credentials. The child
 * must lead its own process group (spawn with detached: true), so a dropped session can end it all.
 */
export type CommandLauncher = (command: string[]) => ChildProcess;

export function serveExec(
  session: SpdySession,
  protocol: string,
  options: ExecOptions,
  launch: CommandLauncher,
  log: Logger,
): void {
  const expected = expectedStreams(options, protocol);
  const streams = new Map<StreamType, SpdyStream>();
  let started = false;
  const timer = setTimeout(() => {
    log.info('exec: the client did not open its streams in time', { expected: [...expected] });
    session.close();
  }, STREAM_CREATION_TIMEOUT_MS);
  session.on('close', () => clearTimeout(timer));

  session.on('stream', (stream) => {
    stream.on('error', (err) => log.debug('exec stream error', { stream: stream.id, error: err }));
    const type = stream.headers.streamtype as StreamType | undefined;
    if (type === undefined || !expected.has(type) || streams.has(type)) {
      log.info('exec: unexpected stream', { type });
      stream.reset();
      return;
    }
    streams.set(type, stream);
    if (streams.size === expected.size && !started) {
      started = true;
      clearTimeout(timer);
      run();
    }
  });

  function finish(result: ExecResult): void {
    const errorStream = streams.get('error')!;
    const message = resultMessage(result, protocol);
    if (message === undefined) errorStream.end();
    else errorStream.end(message);
    // The kubelet closes the connection when the command is done (GOAWAY, then TCP close).
    const closeSoon = () => setImmediate(() => session.close());
    if (errorStream.writableFinished || errorStream.destroyed) closeSoon();
    else {
      errorStream.once('finish', closeSoon);
      errorStream.once('close', closeSoon);
    }
  }

  function run(): void {
    log.info('exec', { command: options.command, protocol, tty: options.tty });
    let child: ChildProcess;
    try {
      child = launch(options.command);
    } catch (err) {
      for (const t of ['stdout', 'stderr'] as const) streams.get(t)?.end();
      finish({ failure: err instanceof Error ? err.message : String(err) });
      return;
    }
    const outputsDone: Promise<void>[] = [];
    const whenEnded = (w: Writable) =>
      new Promise<void>((resolve) => {
        w.once('finish', resolve);
        w.once('close', resolve);
      });
    const stdoutStream = streams.get('stdout');
    const stderrStream = streams.get('stderr');
    if (options.tty) {
      // No pseudo-terminal here: a terminal would interleave both outputs, so merge them.
      if (stdoutStream) {
        outputsDone.push(whenEnded(stdoutStream));
        let open = 2;
        for (const source of [child.stdout!, child.stderr!]) {
          source.pipe(stdoutStream, { end: false });
          source.on('end', () => {
            if (--open === 0) stdoutStream.end();
          });
        }
      } else {
        child.stdout!.resume();
        child.stderr!.resume();
      }
    } else {
      for (const [source, sink] of [
        [child.stdout!, stdoutStream],
        [child.stderr!, stderrStream],
      ] as const) {
        if (!sink) source.resume();
        else {
          outputsDone.push(whenEnded(sink));
          source.pipe(sink);
        }
      }
    }
    child.stdin!.on('error', () => {}); // EPIPE when the command does not read its input
    const stdinStream = streams.get('stdin');
    if (stdinStream) stdinStream.pipe(child.stdin!);
    else child.stdin!.end();
    streams.get('resize')?.resume(); // window sizes mean nothing without a pseudo-terminal

    let spawnError: Error | undefined;
    let exited = false;
    child.on('error', (err) => {
      spawnError = err;
    });
    // The client went away (kubectl interrupted): nobody reads the output, so end the command.
    session.on('close', () => {
      if (exited || child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    });
    child.on('exit', () => {
      exited = true;
    });
    child.on('close', async (code, signal) => {
      await Promise.all(outputsDone);
      if (stdinStream) stdinStream.unpipe(child.stdin!);
      if (spawnError) {
        for (const s of [stdoutStream, stderrStream]) s?.end();
        finish({ failure: spawnError.message });
      } else if (signal) finish({ signal });
      else finish({ exitCode: code ?? 0 });
    });
  }
}
