// `imgvault restore <set> <folder>`: recreates a backup set's tree byte for byte with modification
// times. Every file is written to a temporary name while its sha256 is computed, verified against
// the name, then given its mtime and renamed into place, so an interrupted restore never leaves a
// file that looks whole. A re-run skips files already identical; a different local file is never
// overwritten without --force.

import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { fsyncPath } from '../fileWrites.ts';
import { namePath } from '../protocol/nameHeaders.ts';
import { bearerHeaders, ClusterClient, managerUrls } from './clusterClient.ts';
import { listSet, ProgressLine, pathOfKey, type RemoteName, sha256OfFile } from './localTree.ts';

export interface RestoreSummary {
  set: string;
  restored: number;
  /** Files whose sha256 was checked equal to the set's: restored ones and ones already in place. */
  verified: number;
  /** Already identical locally: not downloaded. */
  unchanged: number;
  /** Different local files left alone (no --force); counted in `failed` too. */
  conflicts: number;
  failed: number;
  bytesDownloaded: number;
  interrupted: boolean;
}

interface RestoreFlags {
  prefix?: string;
  force?: boolean;
  json?: boolean;
  concurrency: string;
  url?: string;
  token?: string;
}

class Conflict extends Error {}

class Restore {
  readonly summary: RestoreSummary;
  private stopping = false;
  private done = 0;
  private bytesDone = 0;

  constructor(
    private readonly client: ClusterClient,
    private readonly set: string,
    private readonly root: string,
    private readonly force: boolean,
    private readonly progress: ProgressLine,
  ) {
    this.summary = {
      set,
      restored: 0,
      verified: 0,
      unchanged: 0,
      conflicts: 0,
      failed: 0,
      bytesDownloaded: 0,
      interrupted: false,
    };
  }

  stop(): void {
    this.stopping = true;
    this.summary.interrupted = true;
  }

  async run(names: RemoteName[], concurrency: number): Promise<void> {
    const queue = [...names];
    await Promise.all(
      Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
        for (let n = queue.shift(); n !== undefined && !this.stopping; n = queue.shift()) {
          await this.one(n);
          this.done++;
          this.bytesDone += n.size;
          this.progress.update(this.done, this.bytesDone);
        }
      }),
    );
  }

  private async one(name: RemoteName): Promise<void> {
    try {
      const path = pathOfKey(this.root, name.key);
      if (path === null) throw new Error('the key cannot be a path under the folder');
      if (await this.alreadyThere(path, name)) {
        this.summary.unchanged++;
        this.summary.verified++;
        return;
      }
      await this.download(path, name);
      this.summary.restored++;
      this.summary.verified++;
      this.progress.line(`restored\t${name.key}`);
    } catch (err) {
      this.summary.failed++;
      if (err instanceof Conflict) this.summary.conflicts++;
      this.progress.line(`failed\t${name.key}\t${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** True when `path` already holds the name's bytes (its mtime is set back if it differs). */
  private async alreadyThere(path: string, name: RemoteName): Promise<boolean> {
    const s = await stat(path).catch(() => null);
    if (s === null) return false;
    if (!s.isFile()) throw new Conflict(`${path} exists and is not a file`);
    if (s.size === name.size && (await sha256OfFile(path)) === name.sha256) {
      if (Math.round(s.mtimeMs) !== name.mtime)
        await utimes(path, new Date(name.mtime), new Date(name.mtime));
      return true;
    }
    if (!this.force) throw new Conflict(`${path} exists with other content (--force overwrites it)`);
    return false;
  }

  private async download(path: string, name: RemoteName): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    const partial = `${path}.imgvault-part`;
    try {
      const { res } = await this.client.request('GET', namePath(this.set, name.key), { expect: [200] });
      const hash = createHash('sha256');
      let size = 0;
      const tap = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          size += chunk.length;
          done(null, chunk);
        },
      });
      await pipeline(res.body, tap, createWriteStream(partial));
      this.summary.bytesDownloaded += size;
      const sha256 = hash.digest('hex');
      if (sha256 !== name.sha256 || size !== name.size) {
        throw new Error(`downloaded bytes do not match the set (sha256 ${sha256}, ${size} bytes)`);
      }
      await utimes(partial, new Date(name.mtime), new Date(name.mtime));
      // Durable before it counts as restored: a power cut must not leave an empty file under the
      // final name, which a re-run would then take for a different local file.
      await fsyncPath(partial);
      await rename(partial, path);
      await fsyncPath(dirname(path));
    } finally {
      await rm(partial, { force: true });
    }
  }
}

function printSummary(s: RestoreSummary, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(s));
    return;
  }
  console.error(
    `restore of set ${s.set}${s.interrupted ? ' (interrupted: run it again to finish)' : ''}: ` +
      `${s.restored} restored, ${s.verified} verified, ${s.unchanged} unchanged, ${s.failed} failed ` +
      `(${s.conflicts} conflicts); ${s.bytesDownloaded} bytes downloaded`,
  );
}

async function restoreAction(set: string, folder: string, flags: RestoreFlags): Promise<number> {
  const client = new ClusterClient(managerUrls(flags.url), bearerHeaders(flags.token));
  const names = (await listSet(client, set)).filter((n) => !flags.prefix || n.key.startsWith(flags.prefix));
  const progress = new ProgressLine(
    names.length,
    names.reduce((n, f) => n + f.size, 0),
  );
  const restore = new Restore(client, set, folder, flags.force === true, progress);
  let interrupts = 0;
  const onInterrupt = () => {
    interrupts++;
    restore.stop();
    if (interrupts > 1) {
      progress.clear();
      printSummary(restore.summary, flags.json === true);
      process.exit(130);
    }
  };
  process.on('SIGINT', onInterrupt);
  process.on('SIGTERM', onInterrupt);
  try {
    await mkdir(folder, { recursive: true });
    await restore.run(names, Math.max(1, Math.min(64, Number(flags.concurrency) || 4)));
  } finally {
    process.off('SIGINT', onInterrupt);
    process.off('SIGTERM', onInterrupt);
    progress.clear();
  }
  printSummary(restore.summary, flags.json === true);
  if (restore.summary.interrupted) return 130;
  return restore.summary.failed > 0 ? 1 : 0;
}

export function registerRestoreCommand(program: Command): void {
  program
    .command('restore')
    .description(
      'restore a backup set into a folder, byte for byte with modification times; every file is ' +
        'verified by sha256. A re-run skips files already identical; a different local file is left ' +
        'alone (counted as a conflict) unless --force',
    )
    .argument('<set>', 'the backup set (bucket)')
    .argument('<folder>', 'where to recreate the tree (created if missing)')
    .option('--prefix <prefix>', 'only the keys that start with this')
    .option('--force', 'overwrite local files whose content differs from the set')
    .option('--json', 'print the summary as one JSON object on standard output')
    .option('-c, --concurrency <n>', 'files in flight', '4')
    .option(
      '--url <urls>',
      'managers of the cluster, comma-separated [env IMGVAULT_URL; default http://127.0.0.1:7001,7002,7003]',
    )
    .option('--token <token>', 'bearer token, when the cluster requires one [env IMGVAULT_TOKEN]')
    .action(async (set: string, folder: string, flags: RestoreFlags) => {
      try {
        process.exitCode = await restoreAction(set, folder, flags);
      } catch (err) {
        console.error(`imgvault: ${err instanceof Error ? err.message : String(err)}`);
        process.exitCode = 1;
      }
    });
}
