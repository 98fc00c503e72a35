// `imgvault cluster` (what `npm start` runs): an embedded cluster on 127.0.0.1 as child processes,
// data under one folder, so a restart with the same folder keeps everything.
//
// The launcher owns its children: each runs in its own process group (a terminal's Ctrl-C reaches
// the launcher alone, which then stops workers, then managers, each with one control message), is
// restarted with backoff if it dies on its own, and has its pid in `<data>/<id>.pid`.

import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { ensureCredentialTree, managerDir, workerDir } from '../http/credentialFiles.ts';
import { checkPortFree, StartRefused } from '../manager/bootstrapGuard.ts';
import { EXIT_REMOVED } from '../storagenode/workerExit.ts';
import { managerUrl, peersSpec, spawnManager, waitForLeader } from './localManagers.ts';
import { spawnWorker, workerUrl } from './localWorkers.ts';
import { SupervisedChild, type SupervisedChildOptions } from './supervisedChild.ts';

interface WorkerPresence {
  id: string;
  healthy: boolean;
  /** The leader's view of it: up, suspect, down, draining, drained, or absent (never registered). */
  state: string | null;
}

async function workerPresence(
  leaderUrl: string,
  workers: { id: string; url: string }[],
): Promise<WorkerPresence[]> {
  const healthy = await Promise.all(
    workers.map((w) =>
      fetch(`${w.url}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
        (res) => res.ok,
        () => false,
      ),
    ),
  );
  let states = new Map<string, string>();
  try {
    const res = await fetch(`${leaderUrl}/v1/cluster/nodes`, { signal: AbortSignal.timeout(1_000) });
    const body = (await res.json()) as { nodes: { id: string; state: string }[] };
    states = new Map(body.nodes.map((n) => [n.id, n.state]));
  } catch {}
  return workers.map((w, i) => ({ id: w.id, healthy: healthy[i] ?? false, state: states.get(w.id) ?? null }));
}

// A worker that answers its own /healthz and that the leader no longer counts silent has started;
// the table alone is not enough: after a restart it still says `up` from the previous run.
const STARTED_STATES = new Set(['up', 'draining', 'drained']);

/**
 * Waits, up to timeoutMs, for every worker to start; returns what it saw last, so the caller can
 * start with what it has and name what is missing. A worker in `removed` (it exited saying it was
 * removed from the cluster, and is not restarted) is not waited for, nor returned.
 */
async function waitForWorkers(
  leaderUrl: string,
  workers: { id: string; url: string }[],
  timeoutMs: number,
  removed: ReadonlySet<string>,
): Promise<WorkerPresence[]> {
  const deadline = Date.now() + timeoutMs;
  let seen: WorkerPresence[] = [];
  while (Date.now() < deadline) {
    seen = await workerPresence(
      leaderUrl,
      workers.filter((w) => !removed.has(w.id)),
    );
    if (seen.every((w) => w.healthy && w.state !== null && STARTED_STATES.has(w.state))) return seen;
    await new Promise((r) => setTimeout(r, 100));
  }
  return seen;
}

interface ClusterFlags {
  data: string;
  managers: string;
  basePort: string;
  workers: string;
  workerBasePort: string;
  s3BasePort?: string;
  leaderTimeout: string;
  restart: boolean;
}

/**
 * Whether `pid` is a running `imgvault cluster`. A pid file outlives a launcher that was killed,
 * and its number may since belong to any process: where /proc tells, the command line decides.
 */
async function isLauncher(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').includes('cluster');
  } catch {
    return true;
  }
}

/**
 * Claims the data folder with `<data>/cluster.pid`; refuses (with a plain message) when another
 * launcher that is still alive holds it: two clusters on one folder would share every store.
 */
async function claimDataFolder(dataDir: string): Promise<string | null> {
  const file = join(dataDir, 'cluster.pid');
  try {
    const pid = Number.parseInt(await readFile(file, 'utf8'), 10);
    if (Number.isInteger(pid) && pid !== process.pid && (await isLauncher(pid))) {
      return `data folder ${dataDir} is in use by another imgvault cluster (pid ${pid}); stop it, or use another --data`;
    }
  } catch {}
  await writeFile(file, `${process.pid}\n`);
  return null;
}

async function firstTakenPort(layout: Layout): Promise<string | null> {
  const all = [
    ...layout.members.map((m) => ({ ...m, kind: 'manager', flag: '--base-port' })),
    ...layout.workers.map((w) => ({ ...w, kind: 'worker', flag: '--worker-base-port' })),
    ...layout.members
      .filter((m) => m.s3Port !== null)
      .map((m) => ({ id: m.id, port: m.s3Port!, kind: 'S3 endpoint of manager', flag: '--s3-base-port' })),
  ];
  for (const p of all) {
    try {
      await checkPortFree('127.0.0.1', p.port);
    } catch (err) {
      if (!(err instanceof StartRefused)) throw err;
      return `port ${p.port} (${p.kind} ${p.id}) on 127.0.0.1 is in use by another process (another imgvault cluster?): stop it, or choose other ports with ${p.flag}`;
    }
  }
  return null;
}

interface Layout {
  dataDir: string;
  /** Every credential of the cluster (credentialFiles.ts), generated on the first start. */
  credentialsDir: string;
  members: { id: string; port: number; s3Port: number | null }[];
  workers: { id: string; port: number }[];
  leaderTimeoutMs: number;
  restart: boolean;
}

function parseLayout(flags: ClusterFlags): Layout | string {
  const count = Number(flags.managers);
  const basePort = Number(flags.basePort);
  const workerCount = Number(flags.workers);
  const workerBasePort = Number(flags.workerBasePort);
  if (!Number.isInteger(count) || count < 1 || count > 9) return '--managers must be 1..9';
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + count > 65_535)
    return '--base-port is not a usable port';
  if (!Number.isInteger(workerCount) || workerCount < 0 || workerCount > 32) return '--workers must be 0..32';
  if (!Number.isInteger(workerBasePort) || workerBasePort < 1 || workerBasePort + workerCount > 65_535)
    return '--worker-base-port is not a usable port';
  const s3BasePort = flags.s3BasePort === undefined ? basePort + 200 : Number(flags.s3BasePort);
  if (!Number.isInteger(s3BasePort) || s3BasePort < 0 || s3BasePort + count > 65_535)
    return '--s3-base-port is not a usable port (0: no S3 endpoint)';
  const dataDir = resolve(flags.data);
  return {
    dataDir,
    credentialsDir: join(dataDir, 'credentials'),
    members: Array.from({ length: count }, (_, i) => ({
      id: `m${i + 1}`,
      port: basePort + i,
      s3Port: s3BasePort === 0 ? null : s3BasePort + i,
    })),
    workers: Array.from({ length: workerCount }, (_, i) => ({ id: `w${i + 1}`, port: workerBasePort + i })),
    leaderTimeoutMs: Number(flags.leaderTimeout),
    restart: flags.restart,
  };
}

const say = (line: string) => console.log(line);

function s3Endpoints(layout: Layout): string[] {
  return layout.members.filter((m) => m.s3Port !== null).map((m) => `http://127.0.0.1:${m.s3Port}`);
}
const warn = (line: string) => console.error(line);

/** What every child of the launcher shares: its pid file and log in the data folder, the restart choice. */
function supervision(layout: Layout, kind: SupervisedChildOptions['kind'], id: string) {
  return {
    kind,
    id,
    pidFile: join(layout.dataDir, `${id}.pid`),
    logFile: join(layout.dataDir, `${id}.log`),
    say: warn,
    restart: layout.restart,
  };
}

function superviseManagers(layout: Layout): SupervisedChild[] {
  const peers = peersSpec(layout.members);
  return layout.members.map((m) => {
    const common = supervision(layout, 'manager', m.id);
    return new SupervisedChild({
      ...common,
      refuseRestart: () => lostRaftLog(join(layout.dataDir, m.id), m.id),
      spawn: () =>
        spawnManager({
          id: m.id,
          port: m.port,
          dataDir: join(layout.dataDir, m.id),
          peers,
          credentialsDir: managerDir(layout.credentialsDir),
          ...(m.s3Port !== null ? { args: ['--s3-port', String(m.s3Port)] } : {}),
          logFile: common.logFile,
          detached: true,
          ipc: true,
        }),
    });
  });
}

/**
 * A manager that ran here has a Raft log under its folder. When it is gone, restarting the manager
 * under its founding flags would bring back a voter with no log and no votes, which can help elect
 * a leader that lacks committed entries, whatever the start-up guard can see (a leader elected
 * since knows nothing of this manager's acknowledgements). It must be removed and added again.
 */
async function lostRaftLog(managerDir: string, id: string): Promise<string | null> {
  if (await holdsRaftLog(join(managerDir, 'raft'))) return null;
  return `its Raft log (${join(managerDir, 'raft')}) is gone; a manager that lost its data must be removed and added again (imgvault manager remove ${id}, then --join; docs/operations.md, Membership)`;
}

/**
 * Whether a Raft log folder holds a log: LevelDB's table files, or a write-ahead log with bytes in
 * it. A manager opens its store before it asks its peers whether it may bootstrap, so a start they
 * refused leaves an empty store behind (CURRENT, a manifest, an empty log): that is no log.
 */
async function holdsRaftLog(dir: string): Promise<boolean> {
  const files = await readdir(dir).catch(() => [] as string[]);
  for (const file of files) {
    if (/\.(ldb|sst)$/.test(file)) return true;
    if (/^\d+\.log$/.test(file) && (await stat(join(dir, file)).catch(() => null))?.size) return true;
  }
  return false;
}

/**
 * The managers not to start, each with its reason: on a folder where some manager has a Raft log
 * (the cluster ran here), one whose log is gone would bootstrap as a founder, the same voter
 * without a memory that a restart refuses to bring back (lostRaftLog). A folder where none has one
 * is a new cluster: all start.
 */
async function managersWithLostLogs(layout: Layout): Promise<Map<string, string>> {
  const lost = new Map<string, string>();
  for (const m of layout.members) {
    const why = await lostRaftLog(join(layout.dataDir, m.id), m.id);
    if (why !== null) lost.set(m.id, why);
  }
  return lost.size === layout.members.length ? new Map() : lost;
}

/** `removed` collects the workers that exit saying they were removed from the cluster. */
function superviseWorkers(layout: Layout, managerUrls: string[], removed: Set<string>): SupervisedChild[] {
  return layout.workers.map((w) => {
    const common = supervision(layout, 'worker', w.id);
    return new SupervisedChild({
      ...common,
      refuseRestart: async (exitCode) => {
        if (exitCode !== EXIT_REMOVED) return null;
        removed.add(w.id);
        return `it was removed from the cluster (imgvault worker remove ${w.id}); its id never registers again`;
      },
      // Each worker gets its own zone label so the two copies of an image always land on two
      // different workers' disks.
      spawn: () =>
        spawnWorker({
          id: w.id,
          port: w.port,
          dataDir: join(layout.dataDir, w.id),
          managers: managerUrls,
          credentialsDir: workerDir(layout.credentialsDir, w.id),
          zone: `zone-${w.id}`,
          logFile: common.logFile,
          detached: true,
          ipc: true,
        }),
    });
  });
}

/**
 * Resolves with a one-line reason once a majority of the managers have failed to start (no leader
 * can be elected then); each failure is also reported as it happens.
 */
function majorityFailed(managers: SupervisedChild[], notStarted: number): Promise<string> {
  const total = managers.length + notStarted;
  return new Promise((resolve) => {
    const failed = new Map<string, string>();
    for (const m of managers) {
      m.onUnexpectedExit = (reason, exit) => {
        failed.set(m.name, reason ?? exit);
        if (failed.size + notStarted > total / 2) {
          const [name, why] = [...failed.entries()][0]!;
          resolve(`${name} could not start: ${why}`);
        }
      };
    }
  });
}

function describeMissing(workers: WorkerPresence[]): string[] {
  const lines: string[] = [];
  for (const w of workers) {
    if (w.state === 'drained' || w.state === 'draining') {
      lines.push(
        `imgvault cluster: warning: worker ${w.id} is ${w.state}: it takes no new images ` +
          `(imgvault worker undrain ${w.id} takes it back)`,
      );
    } else if (!w.healthy || w.state === null || !STARTED_STATES.has(w.state)) {
      lines.push(
        `imgvault cluster: warning: worker ${w.id} has not started (${w.healthy ? `leader sees it ${w.state ?? 'unregistered'}` : 'not answering'}); starting without it, see its log`,
      );
    }
  }
  return lines;
}

export function registerClusterCommand(program: Command): void {
  program
    .command('cluster')
    .description(
      'run an embedded cluster on 127.0.0.1 (managers and workers as child processes, restarted if they die); Ctrl-C stops it',
    )
    .option('--data <dir>', 'data folder (one sub-folder, log and pid file per process)', './data')
    .option('--managers <n>', 'number of managers', '3')
    .option('--base-port <port>', 'port of the first manager; the others follow', '7001')
    .option('--workers <n>', 'number of storage workers (0 runs the managers alone)', '3')
    .option('--worker-base-port <port>', 'port of the first worker; the others follow', '7101')
    .option(
      '--s3-base-port <port>',
      "port of the first manager's S3 endpoint; the others follow (default: --base-port + 200; 0: none)",
    )
    .option('--leader-timeout <ms>', 'how long to wait for a leader, and then for the workers', '30000')
    .option('--no-restart', 'leave a child that dies down (for drills that control their own faults)')
    .action(async (flags: ClusterFlags) => {
      const layout = parseLayout(flags);
      if (typeof layout === 'string') {
        warn(`imgvault cluster: ${layout}`);
        process.exit(2);
      }
      await runCluster(layout);
    });
}

/**
 * Waits for the workers, warns about each one missing or drained; how many take images. A worker
 * removed from the cluster is neither waited for nor warned about: its supervisor said why it stays
 * down.
 */
async function workersTakingImages(
  layout: Layout,
  leaderUrl: string,
  removed: ReadonlySet<string>,
): Promise<number> {
  const presence = await waitForWorkers(
    leaderUrl,
    layout.workers.map((w) => ({ id: w.id, url: workerUrl(w.port) })),
    layout.leaderTimeoutMs,
    removed,
  );
  for (const line of describeMissing(presence)) warn(line);
  return presence.filter((w) => w.healthy && w.state === 'up').length;
}

async function runCluster(layout: Layout): Promise<void> {
  const { dataDir } = layout;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const claimRefused = await claimDataFolder(dataDir);
  if (claimRefused) {
    warn(`imgvault cluster: stopped: ${claimRefused}`);
    process.exit(1);
  }
  // Per-role credentials, generated once; a folder from before them (a cluster-secret file) gets
  // them on its next start, and the CLI finds the operator's there.
  await ensureCredentialTree(
    layout.credentialsDir,
    layout.workers.map((w) => w.id),
  );
  // Before any child starts: with a port taken, whatever answers there (another cluster's leader)
  // would be mistaken for ours.
  const portTaken = await firstTakenPort(layout);
  if (portTaken) {
    await rm(join(dataDir, 'cluster.pid'), { force: true });
    warn(`imgvault cluster: stopped: ${portTaken}`);
    process.exit(1);
  }

  const managers = superviseManagers(layout);
  const urls = layout.members.map((m) => managerUrl(m.port));
  const removedWorkers = new Set<string>();
  const workers = superviseWorkers(layout, urls, removedWorkers);
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    const began = Date.now();
    say('imgvault cluster: stopping...');
    // Workers first: they need no manager to stop, whereas managers gone first would leave them
    // logging failed heartbeats. Then every manager at once, told the cluster is stopping, so no
    // leader waits to hand over to a follower that is stopping too.
    await Promise.all(workers.map((w) => w.stop()));
    await Promise.all(managers.map((m) => m.stop()));
    await rm(join(dataDir, 'cluster.pid'), { force: true });
    say(`imgvault cluster: stopped in ${Date.now() - began} ms`);
    process.exit(code);
  };
  const onSignal = () => {
    if (!stopping) return void stopAll(0);
    // A second signal: the operator will not wait.
    for (const c of [...workers, ...managers]) c.kill();
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const lost = await managersWithLostLogs(layout);
  for (const [id, why] of lost) warn(`imgvault cluster: warning: manager ${id} not started: ${why}`);
  if (lost.size > layout.members.length / 2) {
    warn(
      `imgvault cluster: stopped: a majority of the managers (${[...lost.keys()].join(', ')}) lost their Raft logs; no leader can be elected without them (restore the managers' folders from a backup)`,
    );
    return stopAll(1);
  }
  const started = managers.filter((_, i) => !lost.has(layout.members[i]!.id));
  for (const m of started) await m.start();
  const failed = majorityFailed(started, lost.size);
  let leader: { id: string; url: string; term: number };
  try {
    leader = await Promise.race([
      waitForLeader(urls, layout.leaderTimeoutMs),
      failed.then((why) => Promise.reject(new Error(why))),
    ]);
  } catch (err) {
    warn(`imgvault cluster: stopped: ${err instanceof Error ? err.message : String(err)}`);
    return stopAll(1);
  }
  for (const m of started) m.onUnexpectedExit = () => {};
  for (const w of workers) await w.start();
  for (const m of layout.members)
    say(`manager ${m.id}: ${managerUrl(m.port)}  (log: ${join(dataDir, `${m.id}.log`)})`);
  for (const w of layout.workers)
    say(`worker  ${w.id}: ${workerUrl(w.port)}  (log: ${join(dataDir, `${w.id}.log`)})`);
  const usable = await workersTakingImages(layout, leader.url, removedWorkers);
  const kept = layout.workers.length - removedWorkers.size;
  if (stopping) return;
  if (layout.workers.length > 0 && usable === 0) {
    warn(
      "imgvault cluster: stopped: no worker could start, so no image can be stored; see the workers' logs",
    );
    return stopAll(1);
  }
  say(
    `imgvault cluster ready: ${lost.size > 0 ? `${started.length} of ${layout.members.length}` : layout.members.length} managers, ${usable} of ${kept} workers taking images${removedWorkers.size > 0 ? ` (${[...removedWorkers].join(', ')} removed from the cluster)` : ''}, leader ${leader.id} at ${leader.url} (term ${leader.term}); ${s3Endpoints(layout).length > 0 ? `S3 endpoint ${s3Endpoints(layout)[0]}; ` : ''}data in ${dataDir}`,
  );
  say(
    `open access on 127.0.0.1 (no client tokens): try  curl -L --data-binary @photo.jpg ${urls[0]}/v1/images`,
  );
  const s3 = s3Endpoints(layout);
  if (s3.length > 0) {
    say(
      `S3 endpoint: ${s3[0]} (any manager's: ${s3.join(', ')}); create an access key with  imgvault s3 keys create`,
    );
  }
  say(
    `pid files: ${join(dataDir, '<id>.pid')}; a child that dies is ${layout.restart ? 'restarted' : 'left down (--no-restart)'}`,
  );
}
