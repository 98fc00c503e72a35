// `imgvault cluster` (what `npm start` runs): an embedded cluster on 127.0.0.1 as child processes,
// data under one folder, so a restart with the same folder keeps everything.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { managerUrl, peersSpec, spawnManager, stopChild, waitForLeader } from './localManagers.ts';
import { spawnWorker, workerUrl } from './localWorkers.ts';

/**
 * Waits until every worker answers its own /healthz and the leader counts them all up. The
 * table alone is not enough: after a restart it still says `up` from the previous run, before the
 * workers have even started, and an image read then would fail. Throws after timeoutMs.
 */
async function waitForWorkers(leaderUrl: string, workerUrls: string[], timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let up = 0;
  while (Date.now() < deadline) {
    try {
      const healthy = await Promise.all(
        workerUrls.map((url) =>
          fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
            (res) => res.ok,
            () => false,
          ),
        ),
      );
      const res = await fetch(`${leaderUrl}/v1/cluster/nodes`, { signal: AbortSignal.timeout(1_000) });
      const body = (await res.json()) as { nodes: { state: string }[] };
      up = body.nodes.filter((n) => n.state === 'up').length;
      if (healthy.every(Boolean) && up >= workerUrls.length) return up;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`only ${up} of ${workerUrls.length} workers up within ${timeoutMs} ms`);
}

interface ClusterFlags {
  data: string;
  managers: string;
  basePort: string;
  workers: string;
  workerBasePort: string;
  leaderTimeout: string;
}

/** The cluster secret is generated once and kept beside the data, readable by its owner only. */
async function ensureClusterSecret(file: string): Promise<void> {
  try {
    const existing = (await readFile(file, 'utf8')).trim();
    if (existing.length >= 16) return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await writeFile(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
}

export function registerClusterCommand(program: Command): void {
  program
    .command('cluster')
    .description('run an embedded cluster on 127.0.0.1 (managers as child processes); Ctrl-C stops it')
    .option('--data <dir>', 'data folder (one sub-folder per process)', './data')
    .option('--managers <n>', 'number of managers', '3')
    .option('--base-port <port>', 'port of the first manager; the others follow', '7001')
    .option('--workers <n>', 'number of storage workers (0 runs the managers alone)', '3')
    .option('--worker-base-port <port>', 'port of the first worker; the others follow', '7101')
    .option('--leader-timeout <ms>', 'how long to wait for a leader', '30000')
    .action(async (flags: ClusterFlags) => {
      const count = Number(flags.managers);
      const basePort = Number(flags.basePort);
      if (!Number.isInteger(count) || count < 1 || count > 9) {
        console.error('imgvault cluster: --managers must be 1..9');
        process.exit(2);
      }
      if (!Number.isInteger(basePort) || basePort < 1 || basePort + count > 65_535) {
        console.error('imgvault cluster: --base-port is not a usable port');
        process.exit(2);
      }
      const workerCount = Number(flags.workers);
      const workerBasePort = Number(flags.workerBasePort);
      if (!Number.isInteger(workerCount) || workerCount < 0 || workerCount > 32) {
        console.error('imgvault cluster: --workers must be 0..32');
        process.exit(2);
      }
      if (!Number.isInteger(workerBasePort) || workerBasePort < 1 || workerBasePort + workerCount > 65_535) {
        console.error('imgvault cluster: --worker-base-port is not a usable port');
        process.exit(2);
      }
      const dataDir = resolve(flags.data);
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      const secretFile = join(dataDir, 'cluster-secret');
      await ensureClusterSecret(secretFile);

      const members = Array.from({ length: count }, (_, i) => ({ id: `m${i + 1}`, port: basePort + i }));
      const peers = peersSpec(members);
      const children = new Map<string, ChildProcess>();
      let stopping = false;

      const stopAll = async (code: number) => {
        if (stopping) return;
        stopping = true;
        console.log('imgvault cluster: stopping...');
        await Promise.all([...children.values()].map((c) => stopChild(c, 10_000)));
        console.log('imgvault cluster: stopped');
        process.exit(code);
      };
      process.once('SIGINT', () => void stopAll(0));
      process.once('SIGTERM', () => void stopAll(0));

      for (const m of members) {
        const child = spawnManager({
          id: m.id,
          port: m.port,
          dataDir: join(dataDir, m.id),
          peers,
          secretFile,
          logFile: join(dataDir, `${m.id}.log`),
        });
        child.once('exit', (code, signal) => {
          if (!stopping) {
            console.error(
              `imgvault cluster: manager ${m.id} exited (${signal ?? `code ${code}`}); see ${join(dataDir, `${m.id}.log`)}`,
            );
          }
        });
        children.set(m.id, child);
      }

      const urls = members.map((m) => managerUrl(m.port));
      try {
        // A manager that dies while starting (a port in use, a bad data folder) ends the wait at once.
        const died = new Promise<never>((_, reject) => {
          for (const [id, child] of children) {
            child.once('exit', () => reject(new Error(`manager ${id} exited before a leader was elected`)));
          }
        });
        died.catch(() => {}); // exits after start-up are reported by the handlers above
        const leader = await Promise.race([waitForLeader(urls, Number(flags.leaderTimeout)), died]);
        // Workers register with the leader, so they start once there is one; each gets its own zone
        // label so the two copies of an image always land on two different workers' disks.
        const workerIds = Array.from({ length: workerCount }, (_, i) => ({
          id: `w${i + 1}`,
          port: workerBasePort + i,
        }));
        for (const w of workerIds) {
          const logFile = join(dataDir, `${w.id}.log`);
          const child = spawnWorker({
            id: w.id,
            port: w.port,
            dataDir: join(dataDir, w.id),
            managers: urls,
            secretFile,
            zone: `zone-${w.id}`,
            logFile,
          });
          child.once('exit', (code, signal) => {
            if (!stopping)
              console.error(
                `imgvault cluster: worker ${w.id} exited (${signal ?? `code ${code}`}); see ${logFile}`,
              );
          });
          children.set(w.id, child);
        }
        for (const m of members)
          console.log(`manager ${m.id}: ${managerUrl(m.port)}  (log: ${join(dataDir, `${m.id}.log`)})`);
        for (const w of workerIds)
          console.log(`worker  ${w.id}: ${workerUrl(w.port)}  (log: ${join(dataDir, `${w.id}.log`)})`);
        const registered = await waitForWorkers(
          leader.url,
          workerIds.map((w) => workerUrl(w.port)),
          Number(flags.leaderTimeout),
        );
        console.log(
          `imgvault cluster ready: ${count} managers, ${registered} workers, leader ${leader.id} at ${leader.url} (term ${leader.term}); data in ${dataDir}`,
        );
        console.log(
          `open access on 127.0.0.1 (no client tokens): try  curl -L --data-binary @photo.jpg ${urls[0]}/v1/images`,
        );
      } catch (err) {
        console.error(`imgvault cluster: ${err instanceof Error ? err.message : String(err)}`);
        await stopAll(1);
      }
    });
}
