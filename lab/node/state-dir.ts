// The node agent's state directory (lab/README.md: $TP_LAB_DIR/node/):
//   ipam.json                      pod address allocations
//   created-paths.json             mount points the agent had to create on the host's filesystem
//   pods/<uid>/pod.json            which pod, its namespace and address (to adopt or clean up after a restart)
//   pods/<uid>/etc/{resolv.conf,hosts}
//   pods/<uid>/volumes/<volume>/   volume contents, bind-mounted into the containers
//   pods/<uid>/containers/<name>/<restartCount>.log, start-<restartCount>.sh
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface PodRecord {
  uid: string;
  namespace: string;
  name: string;
  hostNetwork: boolean;
  netns?: string;
  hostVeth?: string;
  ip?: string;
}

function writeAtomically(file: string, data: string | Buffer, mode = 0o600): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data, { mode });
  // writeFileSync's mode applies only to new files; a leftover tmp keeps its old mode otherwise.
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}

export class NodeStateDir {
  constructor(readonly root: string) {}

  get ipamFile(): string {
    return path.join(this.root, 'ipam.json');
  }

  get createdPathsFile(): string {
    return path.join(this.root, 'created-paths.json');
  }

  podDir(uid: string): string {
    return path.join(this.root, 'pods', uid);
  }

  volumeDir(uid: string, volume: string): string {
    return path.join(this.podDir(uid), 'volumes', volume);
  }

  containerDir(uid: string, container: string): string {
    return path.join(this.podDir(uid), 'containers', container);
  }

  logFile(uid: string, container: string, restartCount: number): string {
    return path.join(this.containerDir(uid, container), `${restartCount}.log`);
  }

  startScript(uid: string, container: string, restartCount: number): string {
    return path.join(this.containerDir(uid, container), `start-${restartCount}.sh`);
  }

  writePodRecord(record: PodRecord): void {
    writeAtomically(path.join(this.podDir(record.uid), 'pod.json'), `${JSON.stringify(record, null, 2)}\n`);
  }

  readPodRecords(): PodRecord[] {
    const dir = path.join(this.root, 'pods');
    let uids: string[];
    try {
      uids = fs.readdirSync(dir);
    } catch {
      return [];
    }
    const records: PodRecord[] = [];
    for (const uid of uids) {
      try {
        records.push(JSON.parse(fs.readFileSync(path.join(dir, uid, 'pod.json'), 'utf8')) as PodRecord);
      } catch {
        records.push({ uid, namespace: '', name: '', hostNetwork: false }); // half-written: clean it up
      }
    }
    return records;
  }

  removePod(uid: string): void {
    fs.rmSync(this.podDir(uid), { recursive: true, force: true });
  }

  /** Writes a file by rename, so a container reading it never sees half of it. */
  writeFile(file: string, data: string | Buffer, mode = 0o644): void {
    writeAtomically(file, data, mode);
  }
}

/**
 * Containers share the host's filesystem, so a mountPath that does not exist (say
 * /var/run/secrets/kubernetes.io/serviceaccount) must be created on it before it can be a mount
 * point. The agent remembers what it created and removes it (when empty) once no pod runs, and
 * only then: removing a directory that is a mount point in a live pod's namespace would detach it.
 */
export class CreatedPaths {
  private paths: Set<string>;

  constructor(private readonly file: string) {
    try {
      this.paths = new Set(JSON.parse(fs.readFileSync(file, 'utf8')) as string[]);
    } catch {
      this.paths = new Set();
    }
  }

  /** Makes a directory (or an empty file) exist, recording every component it had to create. */
  ensure(target: string, isFile: boolean): void {
    const missing: string[] = [];
    let p = target;
    while (!fs.existsSync(p)) {
      missing.unshift(p);
      const parent = path.dirname(p);
      if (parent === p) break;
      p = parent;
    }
    if (missing.length === 0) return;
    for (const m of missing) this.paths.add(m);
    this.save();
    for (const m of missing) {
      if (isFile && m === target) fs.writeFileSync(m, '', { flag: 'a' });
      else fs.mkdirSync(m, { recursive: true });
    }
  }

  /** Removes what was created, deepest first, where still empty. Call with no pod running. */
  removeAll(): void {
    const ordered = [...this.paths].sort((a, b) => b.length - a.length);
    for (const p of ordered) {
      try {
        const st = fs.lstatSync(p);
        if (st.isDirectory()) fs.rmdirSync(p);
        else if (st.size === 0) fs.unlinkSync(p);
      } catch {
        // not empty, or gone: leave it
      }
    }
    this.paths.clear();
    this.save();
  }

  private save(): void {
    writeAtomically(this.file, `${JSON.stringify([...this.paths], null, 2)}\n`);
  }
}
