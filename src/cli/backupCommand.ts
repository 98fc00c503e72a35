// `imgvault backup <folder> [--set NAME]`: an incremental, resumable backup of a folder into a
// backup set (a bucket of names). The server's names are the state: a file whose size and mtime
// match its name is unchanged without being read; otherwise its sha256 decides, and content the
// cluster already stores under any name is only named (0 bytes sent). A re-run after Ctrl-C or a
// crash does what is left. Files deleted locally stay in the set until `--prune`.

import { createReadStream } from 'node:fs';
import type { Command } from 'commander';
import { keyProblem } from '../metadata/commands.ts';
import { CONTENT_SHA256_HEADER, MTIME_HEADER, namePath } from '../protocol/nameHeaders.ts';
import { type ClusterClient, tokenClient } from './clusterClient.ts';
import { concurrencyOf, FileTransfer, type TransferFlags, transferCommand } from './fileTransfer.ts';
import {
  defaultSetName,
  isImageFile,
  type LocalFile,
  listSet,
  ProgressLine,
  type RemoteName,
  setNameProblem,
  sha256OfFile,
  walkFolder,
} from './localTree.ts';

export interface BackupSummary {
  set: string;
  new: number;
  changed: number;
  unchanged: number;
  deduplicated: number;
  skipped: number;
  failed: number;
  pruned: number;
  bytesUploaded: number;
  interrupted: boolean;
}

interface BackupFlags extends TransferFlags {
  set?: string;
  prune?: boolean;
  allFiles?: boolean;
}

type Outcome = 'new' | 'changed' | 'unchanged' | 'deduplicated';

class Backup extends FileTransfer<LocalFile, BackupSummary> {
  /** sha256 -> the last store of that content started: a second file with it waits, then names it. */
  private readonly uploading = new Map<string, Promise<Outcome>>();

  constructor(
    private readonly client: ClusterClient,
    readonly set: string,
    /** What the set holds already, by key: what each file is compared with. */
    private readonly remote: Map<string, RemoteName>,
    progress: ProgressLine,
  ) {
    super(
      {
        set,
        new: 0,
        changed: 0,
        unchanged: 0,
        deduplicated: 0,
        skipped: 0,
        failed: 0,
        pruned: 0,
        bytesUploaded: 0,
        interrupted: false,
      },
      progress,
    );
  }

  protected async one(file: LocalFile): Promise<void> {
    try {
      const outcome = await this.backUp(file, this.remote.get(file.key));
      this.summary[outcome]++;
      if (outcome !== 'unchanged') this.progress.line(`${outcome}\t${file.key}`);
    } catch (err) {
      this.failed(file.key, err);
    }
  }

  private async backUp(file: LocalFile, known: RemoteName | undefined): Promise<Outcome> {
    if (known && known.size === file.size && known.mtime === file.mtime) return 'unchanged';
    const sha256 = await sha256OfFile(file.path);
    if (known && known.sha256 === sha256) {
      await this.nameExisting(file, sha256);
      return 'unchanged';
    }
    // Files of the same content go one after the other: the second only names what the first sent.
    const previous = this.uploading.get(sha256) ?? Promise.resolve();
    const mine = previous.catch(() => {}).then(() => this.store(file, sha256, known !== undefined));
    this.uploading.set(sha256, mine);
    try {
      return await mine;
    } finally {
      if (this.uploading.get(sha256) === mine) this.uploading.delete(sha256);
    }
  }

  private async store(file: LocalFile, sha256: string, replacing: boolean): Promise<Outcome> {
    if (await this.nameExisting(file, sha256)) return 'deduplicated';
    if (await this.upload(file, sha256)) return 'deduplicated';
    return replacing ? 'changed' : 'new';
  }

  /** Names content already stored (0 bytes sent); false when the cluster does not hold it. */
  private async nameExisting(file: LocalFile, sha256: string): Promise<boolean> {
    const { res } = await this.client.request('PUT', namePath(this.set, file.key), {
      headers: { 'content-length': '0', [CONTENT_SHA256_HEADER]: sha256, [MTIME_HEADER]: String(file.mtime) },
      body: () => '',
      expect: [200, 201, 404],
    });
    const body = (await res.body.json()) as { error?: { code: string } };
    if (res.statusCode === 404 && body.error?.code !== 'ContentNotFound') {
      throw new Error(`404 ${JSON.stringify(body)}`);
    }
    return res.statusCode !== 404;
  }

  /** Sends the bytes; true when the server found the content stored meanwhile. */
  private async upload(file: LocalFile, sha256: string): Promise<boolean> {
    const { res } = await this.client.request('PUT', namePath(this.set, file.key), {
      headers: {
        'content-length': String(file.size),
        [CONTENT_SHA256_HEADER]: sha256,
        [MTIME_HEADER]: String(file.mtime),
      },
      body: () => createReadStream(file.path),
      expect: [200, 201],
    });
    const body = (await res.body.json()) as { deduplicated: boolean };
    this.summary.bytesUploaded += file.size;
    return body.deduplicated;
  }

  async prune(remote: Map<string, RemoteName>, local: Set<string>): Promise<void> {
    for (const key of remote.keys()) {
      if (this.stopping) return;
      if (local.has(key)) continue;
      try {
        await this.client.request('DELETE', namePath(this.set, key), { expect: [204, 404] });
        this.summary.pruned++;
        this.progress.line(`pruned\t${key}`);
      } catch (err) {
        this.failed(key, err);
      }
    }
  }
}

function describeSummary(s: BackupSummary): string {
  return (
    `backup of set ${s.set}${s.interrupted ? ' (interrupted: run it again to finish)' : ''}: ` +
    `${s.new} new, ${s.changed} changed, ${s.unchanged} unchanged, ${s.deduplicated} deduplicated, ` +
    `${s.skipped} skipped, ${s.failed} failed, ${s.pruned} pruned; ${s.bytesUploaded} bytes uploaded`
  );
}

async function backupAction(folder: string, flags: BackupFlags): Promise<number> {
  const set = flags.set ?? defaultSetName(folder);
  if (!set) throw new Error(`cannot make a set name from ${folder}: pass --set NAME`);
  const badSet = setNameProblem(set);
  if (badSet) throw new Error(badSet);
  const client = tokenClient(flags);
  const all = await walkFolder(folder);
  const files: LocalFile[] = [];
  let skipped = 0;
  const progressOut = new ProgressLine(0, 0);
  for (const f of all) {
    const problem = keyProblem(f.key);
    if ((!flags.allFiles && !isImageFile(f.key)) || problem !== null) {
      skipped++;
      progressOut.line(`skipped\t${f.key}\t${problem ?? 'not an image file (--all-files to include it)'}`);
    } else files.push(f);
  }
  const remote = new Map((await listSet(client, set)).map((n) => [n.key, n]));
  if (flags.prune && all.length === 0 && remote.size > 0) {
    // An unmounted disk or a mistyped path walks to nothing: pruning would delete the whole set.
    throw new Error(
      `${folder} holds no files: refusing to --prune every name of set ${set} (is the folder mounted?)`,
    );
  }
  const progress = ProgressLine.over(files);
  const backup = new Backup(client, set, remote, progress);
  backup.summary.skipped = skipped;
  return backup.interruptible(
    async () => {
      await backup.run(files, concurrencyOf(flags));
      if (flags.prune) await backup.prune(remote, new Set(all.map((f) => f.key)));
    },
    flags.json === true,
    describeSummary,
  );
}

export function registerBackupCommand(program: Command): void {
  const backup = program
    .command('backup')
    .description(
      'back up a folder into a backup set: only new or changed files are sent (size and mtime, then ' +
        'sha256), content the cluster already holds is only named; a re-run resumes. Files that are not ' +
        'images (XMP/JSON sidecars, .AAE, .MOV) are skipped and counted unless --all-files',
    )
    .argument('<folder>', 'the folder to back up')
    .option('--set <name>', 'the backup set (bucket); default: the folder name')
    .option('--prune', 'remove from the set the names whose local file is gone')
    .option('--all-files', 'also send files that are not images (the server refuses what it cannot store)');
  transferCommand(backup, backupAction);
}
