// The user's commands: upload, get, ls, rm. They go through ClusterClient, which follows the 307 a
// follower answers writes with and moves on to another manager when one is down or has no leader.

import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { type ClusterClient, ClusterRequestFailed, tokenClient, withClientOptions } from './clusterClient.ts';
import { concurrencyOf } from './fileTransfer.ts';

interface ClientFlags {
  url?: string;
  token?: string;
}

async function collectFiles(paths: string[]): Promise<string[]> {
  const files: string[] = [];
  const walk = async (p: string): Promise<void> => {
    const s = await stat(p);
    if (s.isDirectory()) {
      for (const entry of (await readdir(p)).sort()) await walk(join(p, entry));
    } else if (s.isFile()) {
      files.push(p);
    }
  };
  for (const p of paths) await walk(p);
  return files;
}

/** The server's bound on one page of `GET /v1/images`. */
const MAX_LS_PAGE = 1000;
/** Downloads into a file cut short, fetched again at most this many times in all. */
const GET_ATTEMPTS = 3;

/** An image as the API describes it: an upload's answer, an item of `GET /v1/images`. */
export interface ImageJson {
  id: string;
  size: number;
  sha256: string;
  contentType: string;
  createdAt: string;
  replicas: string[];
}

interface ImagePage {
  items: ImageJson[];
  next: string | null;
}

function lsLine(o: ImageJson): string {
  return `${o.id}\t${o.size}\t${o.contentType}\t${o.createdAt}\t${o.replicas.join(',')}\n`;
}

/** A line per image, so a script reads the listing as it arrives, however long it is. */
function lsJsonLine(o: ImageJson): string {
  return `${JSON.stringify(o)}\n`;
}

/**
 * Writes to standard output and waits while it is full: a listing of millions of images read
 * slowly (a pipe to a pager) holds one page in memory, not the whole listing. A reader that went
 * away (`| head`) ends the command quietly.
 */
function writeOut(text: string): Promise<void> {
  if (text === '') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      if (err.code === 'EPIPE') process.exit(0);
      reject(err);
    };
    process.stdout.once('error', onError);
    const done = (): void => {
      process.stdout.off('error', onError);
      resolve();
    };
    if (process.stdout.write(text)) done();
    else process.stdout.once('drain', done);
  });
}

function fail(err: unknown): never {
  console.error(`imgvault: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}

export function registerClientCommands(program: Command): void {
  withClientOptions(
    program
      .command('upload')
      .description(
        'upload image files (folders are walked); prints "<id><TAB><file>" per file and a summary. ' +
          'Each file is PUT to an id chosen here, so a retry after an unknown outcome never stores it twice',
      )
      .argument('<paths...>', 'files or folders')
      .option('-c, --concurrency <n>', 'uploads in flight', '4'),
  ).action(async (paths: string[], flags: ClientFlags & { concurrency: string }) => {
    const files = await collectFiles(paths).catch(fail);
    const client = clientOrFail(flags);
    const concurrency = concurrencyOf(flags);
    const tally = { done: 0, failed: 0, retried: 0, bytes: 0 };
    const started = Date.now();
    const queue = [...files];
    await Promise.all(
      Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
        for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
          await uploadOne(client, file, tally);
          progress(`${tally.done}/${files.length} uploaded, ${tally.failed} failed`);
        }
      }),
    );
    progress('');
    const seconds = (Date.now() - started) / 1000;
    console.error(
      `uploaded ${tally.done - tally.failed} of ${files.length} files (${(tally.bytes / 1048576).toFixed(1)} MiB in ${seconds.toFixed(1)} s), ${tally.failed} failed, ${tally.retried} retried`,
    );
    if (tally.failed > 0) process.exit(1);
  });

  withClientOptions(
    program
      .command('get')
      .description('download an image')
      .argument('<id>', 'image id')
      .option('-o, --output <file>', 'write to this file instead of standard output'),
  ).action(async (id: string, flags: ClientFlags & { output?: string }) => {
    const client = clientOrFail(flags);
    // A download cut short must not leave a file that looks whole: it goes to a temp name first.
    const partial = flags.output ? `${flags.output}.${process.pid}.part` : undefined;
    for (let attempt = 1; ; attempt++) {
      let received = 0;
      try {
        const { res } = await client.request('GET', `/v1/images/${encodeURIComponent(id)}`, {
          expect: [200],
        });
        res.body.on('data', (chunk: Buffer) => {
          received += chunk.length;
        });
        await pipeline(res.body, partial ? createWriteStream(partial, { flags: 'wx' }) : process.stdout);
        if (partial && flags.output) await rename(partial, flags.output);
        return;
      } catch (err) {
        if (partial) await rm(partial, { force: true });
        // A body cut after its 200 (a copy that failed its check as it was sent, which the worker
        // has dropped since, or a manager gone): into a file, fetched again whole; on standard
        // output, the bytes already written cannot be taken back.
        if (err instanceof ClusterRequestFailed) fail(err);
        const cut = `the download was cut after ${received} bytes (${(err as Error).message})`;
        if (!partial) fail(new Error(`${cut}: run it again`));
        if (attempt >= GET_ATTEMPTS) fail(new Error(`${cut}, ${attempt} times`));
        console.error(`imgvault get: ${cut}; fetching it again`);
      }
    }
  });

  withClientOptions(
    program
      .command('ls')
      .description(
        'list images in id order (ids sort as strings, not by upload time): id, size, type, created, replicas; printed page by page as they arrive',
      )
      .option('--limit <n>', 'at most this many', '1000')
      .option('--all', 'every image, however many (ignores --limit)')
      .option('--page-size <n>', `images asked for per request, 1..${MAX_LS_PAGE}`, String(MAX_LS_PAGE))
      .option(
        '--json',
        'one JSON object per image and line (JSON Lines), sha256 included, as the API lists it',
      ),
  ).action(
    async (flags: ClientFlags & { limit: string; all?: boolean; pageSize: string; json?: boolean }) => {
      const client = clientOrFail(flags);
      const pageSize = Math.min(MAX_LS_PAGE, Math.max(1, Number(flags.pageSize) || MAX_LS_PAGE));
      try {
        let remaining = flags.all ? Number.POSITIVE_INFINITY : Math.max(1, Number(flags.limit) || 1000);
        let after: string | null = null;
        do {
          const query = new URLSearchParams({ limit: String(Math.min(remaining, pageSize)) });
          if (after) query.set('after', after);
          const { res } = await client.request('GET', `/v1/images?${query}`, { expect: [200] });
          const page = (await res.body.json()) as ImagePage;
          await writeOut(page.items.map(flags.json ? lsJsonLine : lsLine).join(''));
          remaining -= page.items.length;
          after = page.next;
        } while (after && remaining > 0);
      } catch (err) {
        fail(err);
      }
    },
  );

  withClientOptions(program.command('rm').description('delete an image').argument('<id>', 'image id')).action(
    async (id: string, flags: ClientFlags) => {
      const client = clientOrFail(flags);
      try {
        const { res, attempts } = await client.request('DELETE', `/v1/images/${encodeURIComponent(id)}`, {
          expect: [204, 404],
        });
        const text = await res.body.text();
        if (res.statusCode === 404 && attempts === 1) fail(new Error(`404 ${text}`));
        // A 404 after a retry: the attempt whose answer was lost may well have deleted it.
        console.error(res.statusCode === 204 ? `deleted ${id}` : `deleted ${id} (gone when retried)`);
      } catch (err) {
        fail(err);
      }
    },
  );
}

function clientOrFail(flags: ClientFlags): ClusterClient {
  try {
    return tokenClient(flags);
  } catch (err) {
    fail(err);
  }
}

function progress(line: string): void {
  if (process.stderr.isTTY) process.stderr.write(line ? `\r\x1b[K${line}` : '\r\x1b[K');
}

interface UploadTally {
  done: number;
  failed: number;
  retried: number;
  bytes: number;
}

async function uploadOne(client: ClusterClient, file: string, tally: UploadTally): Promise<void> {
  // The id is chosen before the first attempt: a repeat PUT of the same bytes to it answers 200
  // with the first record, so a retry after a lost answer never stores the image twice.
  const id = randomUUID();
  try {
    const { size } = await stat(file);
    const { res, attempts } = await client.request('PUT', `/v1/images/${id}`, {
      body: () => createReadStream(file),
      headers: { 'content-length': String(size) },
      expect: [200, 201],
    });
    const meta = (await res.body.json()) as { id: string; size: number };
    if (attempts > 1) tally.retried++;
    tally.bytes += meta.size;
    progress('');
    console.log(`${meta.id}\t${file}`);
  } catch (err) {
    tally.failed++;
    progress('');
    console.error(`failed\t${file}\t${err instanceof Error ? err.message : String(err)}`);
  } finally {
    tally.done++;
  }
}
