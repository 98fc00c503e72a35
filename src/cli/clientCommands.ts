// The user's commands: upload, get, ls, rm. They talk to any manager's public API (--url) and
// follow the 307 a follower answers writes with, re-sending the body from the file.

import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import pRetry, { AbortError } from 'p-retry';
import { type Dispatcher, request } from 'undici';

const DEFAULT_URL = process.env.IMGVAULT_URL ?? 'http://127.0.0.1:7001';
const MAX_REDIRECTS = 3;

interface ClientFlags {
  url: string;
  token?: string;
}

class RequestFailed extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function authHeaders(flags: ClientFlags): Record<string, string> {
  const token = flags.token ?? process.env.IMGVAULT_TOKEN;
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function describeFailure(res: Dispatcher.ResponseData): Promise<string> {
  const text = await res.body.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (body.error) return `${res.statusCode} ${body.error.code}: ${body.error.message}`;
  } catch {}
  return `${res.statusCode} ${text.slice(0, 200)}`;
}

/**
 * One request, following redirects (the body is rebuilt for each hop) and retrying while no leader
 * is known (503 during an election), a bounded number of times.
 */
async function send(
  flags: ClientFlags,
  method: Dispatcher.HttpMethod,
  path: string,
  opts: { body?: () => NodeJS.ReadableStream; headers?: Record<string, string>; expect: number[] },
): Promise<Dispatcher.ResponseData> {
  return pRetry(
    async () => {
      let url = new URL(path, flags.url);
      for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
        let res: Dispatcher.ResponseData;
        try {
          res = await request(url, {
            method,
            headers: { ...authHeaders(flags), ...opts.headers },
            body: opts.body ? (opts.body() as import('node:stream').Readable) : null,
          });
        } catch (err) {
          throw new Error(`${method} ${url} failed: ${(err as Error).message}`);
        }
        if (res.statusCode === 307 || res.statusCode === 308) {
          const location = res.headers.location;
          await res.body.dump();
          if (typeof location !== 'string') throw new AbortError(`${url} redirected without a location`);
          url = new URL(location, url);
          continue;
        }
        if (opts.expect.includes(res.statusCode)) return res;
        const failure = new RequestFailed(res.statusCode, await describeFailure(res));
        if (res.statusCode === 503) throw failure;
        throw new AbortError(failure);
      }
      throw new AbortError(`more than ${MAX_REDIRECTS} redirects for ${path}: is leadership changing?`);
    },
    { retries: 5, minTimeout: 300, maxTimeout: 3000 },
  );
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

function fail(err: unknown): never {
  console.error(`imgvault: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}

function withClientOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'any manager of the cluster (IMGVAULT_URL)', DEFAULT_URL)
    .option('--token <token>', 'bearer token, when the cluster requires one (IMGVAULT_TOKEN)');
}

export function registerClientCommands(program: Command): void {
  withClientOptions(
    program
      .command('upload')
      .description('upload image files (folders are walked); prints one line per file and a summary')
      .argument('<paths...>', 'files or folders')
      .option('-c, --concurrency <n>', 'uploads in flight', '4'),
  ).action(async (paths: string[], flags: ClientFlags & { concurrency: string }) => {
    const files = await collectFiles(paths).catch(fail);
    const concurrency = Math.max(1, Math.min(64, Number(flags.concurrency) || 4));
    const tty = process.stderr.isTTY;
    let done = 0;
    let failed = 0;
    let bytes = 0;
    const started = Date.now();
    const progress = () => {
      if (tty) process.stderr.write(`\r${done}/${files.length} uploaded, ${failed} failed`);
    };
    const queue = [...files];
    const uploadOne = async (file: string) => {
      try {
        const { size } = await stat(file);
        const res = await send(flags, 'POST', '/v1/images', {
          body: () => createReadStream(file),
          headers: { 'content-length': String(size) },
          expect: [200, 201],
        });
        const meta = (await res.body.json()) as { id: string; size: number };
        bytes += meta.size;
        if (tty) process.stderr.write('\r\x1b[K');
        console.log(`${meta.id}\t${file}`);
      } catch (err) {
        failed++;
        if (tty) process.stderr.write('\r\x1b[K');
        console.error(`failed\t${file}\t${err instanceof Error ? err.message : String(err)}`);
      } finally {
        done++;
        progress();
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
        for (let file = queue.shift(); file !== undefined; file = queue.shift()) await uploadOne(file);
      }),
    );
    if (tty) process.stderr.write('\r\x1b[K');
    const seconds = (Date.now() - started) / 1000;
    console.error(
      `uploaded ${done - failed} of ${files.length} files (${(bytes / 1048576).toFixed(1)} MiB in ${seconds.toFixed(1)} s), ${failed} failed`,
    );
    if (failed > 0) process.exit(1);
  });

  withClientOptions(
    program
      .command('get')
      .description('download an image')
      .argument('<id>', 'image id')
      .option('-o, --output <file>', 'write to this file instead of standard output'),
  ).action(async (id: string, flags: ClientFlags & { output?: string }) => {
    // A download cut short must not leave a file that looks whole: it goes to a temp name first.
    const partial = flags.output ? `${flags.output}.${process.pid}.part` : undefined;
    try {
      const res = await send(flags, 'GET', `/v1/images/${encodeURIComponent(id)}`, { expect: [200] });
      await pipeline(res.body, partial ? createWriteStream(partial, { flags: 'wx' }) : process.stdout);
      if (partial && flags.output) await rename(partial, flags.output);
    } catch (err) {
      if (partial) await rm(partial, { force: true });
      fail(err);
    }
  });

  withClientOptions(
    program
      .command('ls')
      .description('list images, oldest id first')
      .option('--limit <n>', 'at most this many', '1000'),
  ).action(async (flags: ClientFlags & { limit: string }) => {
    try {
      let remaining = Math.max(1, Number(flags.limit) || 1000);
      let after: string | null = null;
      do {
        const query = new URLSearchParams({ limit: String(Math.min(remaining, 1000)) });
        if (after) query.set('after', after);
        const res = await send(flags, 'GET', `/v1/images?${query}`, { expect: [200] });
        const page = (await res.body.json()) as {
          items: { id: string; size: number; contentType: string; createdAt: string; replicas: string[] }[];
          next: string | null;
        };
        for (const o of page.items) {
          console.log(`${o.id}\t${o.size}\t${o.contentType}\t${o.createdAt}\t${o.replicas.join(',')}`);
        }
        remaining -= page.items.length;
        after = page.next;
      } while (after && remaining > 0);
    } catch (err) {
      fail(err);
    }
  });

  withClientOptions(program.command('rm').description('delete an image').argument('<id>', 'image id')).action(
    async (id: string, flags: ClientFlags) => {
      try {
        await send(flags, 'DELETE', `/v1/images/${encodeURIComponent(id)}`, { expect: [204] });
        console.error(`deleted ${id}`);
      } catch (err) {
        fail(err);
      }
    },
  );
}
