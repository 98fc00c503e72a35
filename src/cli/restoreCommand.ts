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
import { type ClusterClient, tokenClient } from './clusterClient.ts';
import { concurrencyOf, FileTransfer, type TransferFlags, transferCommand } from './fileTransfer.ts';
import {
  listSet,
  ProgressLine,
  pathOfKey,
  type RemoteName,
  setNameProblem,
  sha256OfFile,
} from './localTree.ts';

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

interface RestoreFlags extends TransferFlags {
  prefix?: string;
  force?: boolean;
}

class Conflict extends Error {}

class Restore extends FileTransfer<RemoteName, RestoreSummary> {
  constructor(
    private readonly client: ClusterClient,
    private readonly set: string,
    private readonly root: string,
    private readonly force: boolean,
    progress: ProgressLine,
  ) {
    super(
      {
        set,
        restored: 0,
        verified: 0,
        unchanged: 0,
        conflicts: 0,
        failed: 0,
        bytesDownloaded: 0,
        interrupted: false,
      },
      progress,
    );
  }

  protected async one(name: RemoteName): Promise<void> {
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
      if (err instanceof Conflict) this.summary.conflicts++;
      this.failed(name.key, err);
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

function describeSummary(s: RestoreSummary): string {
  return (
    `restore of set ${s.set}${s.interrupted ? ' (interrupted: run it again to finish)' : ''}: ` +
    `${s.restored} restored, ${s.verified} verified, ${s.unchanged} unchanged, ${s.failed} failed ` +
    `(${s.conflicts} conflicts); ${s.bytesDownloaded} bytes downloaded`
  );
}

async function restoreAction(set: string, folder: string, flags: RestoreFlags): Promise<number> {
  const badSet = setNameProblem(set);
  if (badSet) throw new Error(badSet);
  const client = tokenClient(flags);
  const names = (await listSet(client, set)).filter((n) => !flags.prefix || n.key.startsWith(flags.prefix));
  const progress = ProgressLine.over(names);
  const restore = new Restore(client, set, folder, flags.force === true, progress);
  return restore.interruptible(
    async () => {
      await mkdir(folder, { recursive: true });
      await restore.run(names, concurrencyOf(flags));
    },
    flags.json === true,
    describeSummary,
  );
}

export function registerRestoreCommand(program: Command): void {
  const restore = program
    .command('restore')
    .description(
      'restore a backup set into a folder, byte for byte with modification times; every file is ' +
        'verified by sha256. A re-run skips files already identical; a different local file is left ' +
        'alone (counted as a conflict) unless --force',
    )
    .argument('<set>', 'the backup set (bucket)')
    .argument('<folder>', 'where to recreate the tree (created if missing)')
    .option('--prefix <prefix>', 'only the keys that start with this')
    .option('--force', 'overwrite local files whose content differs from the set');
  transferCommand(restore, restoreAction);
}
