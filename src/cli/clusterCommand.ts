// `imgvault cluster` (what `npm start` runs): an embedded cluster on 127.0.0.1 as child processes,
// data under one folder, so a restart with the same folder keeps everything.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { managerUrl, peersSpec, spawnManager, stopChild, waitForLeader } from './localManagers.ts';

interface ClusterFlags {
  data: string;
  managers: string;
  basePort: string;
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
      const dataDir = resolve(flags.data);
      await mkdir(dataDir, { recursive: true });
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

      // Workers: the storage workers are started here, after the managers, once they exist.

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
        for (const m of members)
          console.log(`manager ${m.id}: ${managerUrl(m.port)}  (log: ${join(dataDir, `${m.id}.log`)})`);
        console.log(
          `imgvault cluster ready: ${count} managers, leader ${leader.id} at ${leader.url} (term ${leader.term}); data in ${dataDir}`,
        );
      } catch (err) {
        console.error(`imgvault cluster: ${err instanceof Error ? err.message : String(err)}`);
        await stopAll(1);
      }
    });
}
