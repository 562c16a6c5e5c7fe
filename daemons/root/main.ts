// The tp root daemon: the VIF, the routes of the cluster's subnets and the cluster DNS on the workstation.
// Started by `tp connect` (as root, or through sudo) and driven over its unix socket by the user daemon:
//   node dist/daemons/root/main.js --socket /var/run/tp-root-daemon.socket
// At start it clears what a killed predecessor left behind (resolv.conf, routes, a stale TUN).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_RESOLV_CONF, type DnsMode } from '../../dns/system-resolver.js';
import { createLogger, logDir, logToFile, parseLevel, setLevel } from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import { DaemonService } from '../../rpc/gen/daemon.js';
import { localChannelOptions } from '../../rpc/grpc-options.js';
import { VERSION } from '../../version/version.js';
import { systemCommands } from '../../vif/ip-command.js';
import { DEFAULT_MTU, DEFAULT_VIF_NAME } from '../../vif/vif.js';
import { clearLeftovers, removeRecord, writeRecord } from './leftovers.js';
import { RootDaemon } from './service.js';

export const DEFAULT_STATE_DIR = '/var/lib/tp';
export const LOG_FILE = 'daemon.log';

function integer(min: number, max: number, what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max)
      throw new InvalidArgumentError(`${what} must be a number from ${min} to ${max}`);
    return n;
  };
}

const program = new Command('tp-root-daemon')
  .description("tp's root daemon: the virtual network interface, routes and cluster DNS")
  .version(VERSION)
  .requiredOption('--socket <path>', 'the unix socket to serve the Daemon API on')
  .option(
    '--state-dir <dir>',
    'where leftovers of a crash are recorded (the resolv.conf backup)',
    DEFAULT_STATE_DIR,
  )
  .option('--log-dir <dir>', 'directory of daemon.log (default: the user log directory)')
  .option('--log-level <level>', 'error, warn, info, debug or trace', process.env.TP_LOG_LEVEL ?? 'info')
  .option('--vif-name <name>', 'name of the TUN interface', DEFAULT_VIF_NAME)
  .option('--mtu <bytes>', 'MTU of the TUN interface', integer(1280, 65535, '--mtu'), DEFAULT_MTU)
  .option('--dns-mode <mode>', 'auto, systemd-resolved or resolv.conf', 'auto')
  .addOption(
    new Option(
      '--kernel-nat <on|off>',
      "rewrite established TCP flows' packets in the kernel (eBPF on the VIF's egress) when it can",
    )
      .choices(['on', 'off'])
      .default('on'),
  )
  .option(
    '--resolv-conf <path>',
    'the resolv.conf to manage when systemd-resolved is not used',
    DEFAULT_RESOLV_CONF,
  )
  .showHelpAfterError(false)
  .configureOutput({ outputError: (s, write) => write(s) });

program.parse();
const opts = program.opts<{
  socket: string;
  stateDir: string;
  logDir?: string;
  logLevel: string;
  vifName: string;
  mtu: number;
  kernelNat: 'on' | 'off';
  dnsMode: string;
  resolvConf: string;
}>();

const log = createLogger('root-daemon');

/** Owner of the files the user must reach (socket, log): the user who ran sudo, else root. */
function invokingUser(): { uid: number; gid: number } | undefined {
  const uid = Number(process.env.SUDO_UID);
  const gid = Number(process.env.SUDO_GID);
  return Number.isInteger(uid) && uid > 0 && Number.isInteger(gid) ? { uid, gid } : undefined;
}

/** A socket file nobody answers on is stale; one somebody answers on means a daemon already runs. */
async function claimSocket(socketPath: string): Promise<void> {
  if (!fs.existsSync(socketPath)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new UsageError(`a root daemon already serves ${socketPath}: tp quit stops it`);
  fs.rmSync(socketPath, { force: true });
}

async function main(): Promise<void> {
  setLevel(parseLevel(opts.logLevel));
  if (!['auto', 'systemd-resolved', 'resolv.conf'].includes(opts.dnsMode))
    throw new UsageError(`--dns-mode ${opts.dnsMode} is unknown: use auto, systemd-resolved or resolv.conf`);
  if (process.getuid?.() !== 0)
    throw new UsageError(
      "tp's root daemon must run as root: it creates a network interface and routes (tp connect starts it through sudo)",
    );
  const dir = opts.logDir ?? logDir();
  const logFile = path.join(dir, LOG_FILE);
  logToFile(logFile);
  const user = invokingUser();
  if (user) {
    fs.chownSync(dir, user.uid, user.gid);
    fs.chownSync(logFile, user.uid, user.gid);
  }
  log.info('starting', { version: VERSION, pid: process.pid, socket: opts.socket });

  const settings = {
    vifName: opts.vifName,
    mtu: opts.mtu,
    kernelNat: opts.kernelNat === 'on',
    stateDir: path.resolve(opts.stateDir),
    resolvConfPath: opts.resolvConf,
    dnsMode: opts.dnsMode as DnsMode,
    dnsPort: 53,
    run: systemCommands,
    log,
  };
  const cleared = await clearLeftovers({
    stateDir: settings.stateDir,
    vifName: settings.vifName,
    run: settings.run,
    log,
  });
  for (const c of cleared) log.info('cleared leftovers of a previous root daemon', { what: c });
  await claimSocket(opts.socket);
  writeRecord(settings.stateDir, { pid: process.pid, socket: opts.socket });

  const server = new grpc.Server(localChannelOptions());
  let daemon: RootDaemon | undefined;
  let exiting = false;
  const exit = (code: number) => {
    if (exiting) return;
    exiting = true;
    const done = () => {
      fs.rmSync(opts.socket, { force: true });
      removeRecord(settings.stateDir);
      log.info('stopped');
      process.exit(code);
    };
    server.tryShutdown(done);
    setTimeout(() => {
      server.forceShutdown();
      done();
    }, 2_000).unref();
  };
  daemon = new RootDaemon(settings, opts.socket, () => exit(0));
  server.addService(DaemonService, daemon.service());
  fs.mkdirSync(path.dirname(opts.socket), { recursive: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${opts.socket}`, grpc.ServerCredentials.createInsecure(), (e) =>
      e ? reject(e) : resolve(),
    ),
  );
  // Only the user who started tp may drive the root daemon.
  fs.chmodSync(opts.socket, 0o600);
  if (user) fs.chownSync(opts.socket, user.uid, user.gid);
  log.info('serving', { socket: opts.socket });

  const stop = (signal: string) => {
    log.info('stopping', { signal });
    void daemon!.quit().catch(() => exit(1));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // The terminal that started tp may close: the daemon lives on until tp quit.
  process.on('SIGHUP', () => log.debug('ignoring SIGHUP'));
  process.on('uncaughtException', (e) => {
    log.error('crashed', { error: e.stack ?? e.message });
    // Put the system back as far as possible; what is left, the next start clears.
    const timer = setTimeout(() => process.exit(1), 3_000);
    void daemon!.quit().finally(() => {
      clearTimeout(timer);
      process.exit(1);
    });
  });
}

main().catch((e: Error) => {
  const message = e instanceof UsageError ? e.message : (e.stack ?? e.message);
  log.error('cannot start', { error: message });
  process.stderr.write(`tp root daemon: ${e.message}\n`);
  process.exit(1);
});
