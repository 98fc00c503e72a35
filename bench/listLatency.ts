// Latency of a page of 1,000 images and of one image's record as the table count grows, without
// Raft or HTTP: metadata tables filled through the real apply path (commandBatch entries of 256
// recordObject commands, as the bulk route's batch proposer makes them), then the reads
// `GET /v1/images?limit=1000&after=<random id>` and `GET /v1/images/:id/meta` make after their
// ReadIndex round, with the route's JSON serialization. Each size is filled in a folder of its
// own and measured three times: right after its load (LevelDB may still be compacting it), with
// snapshots of the tables streamed back to back beside the reads (the event loop busy, as a
// manager's is while it writes one), and after the tables were reopened (what a manager restart
// leaves). CPU time per read is printed beside the wall time, except beside the snapshots.
//
//   npm run bench:listlat -- [--images 10000,1000000] [--pages 300] [--metas 5000]

import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Entry } from '../src/consensus/types.ts';
import { toJson } from '../src/manager/http/publicRoutes.ts';
import { type Command, encodeCommand } from '../src/metadata/commands.ts';
import { MetadataStateMachine } from '../src/metadata/metadataStateMachine.ts';
import { percentile } from './closedLoop.ts';

interface Options {
  images: number[];
  pages: number;
  metas: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      images: { type: 'string', default: '10000,1000000' },
      pages: { type: 'string', default: '300' },
      metas: { type: 'string', default: '5000' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(`npm run bench:listlat -- [--images 10000,1000000] [--pages 300] [--metas 5000]

Fills metadata tables in this process through the real apply path to each --images size, then
times --pages pages of 1,000 and --metas record reads (wall and CPU): after the load, beside
snapshots streamed back to back, and after the tables were reopened.`);
    process.exit(0);
  }
  const counts = (flag: string, text: string): number[] => {
    const list = text.split(',').map(Number);
    if (list.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--${flag} takes N[,N...]`);
    return list;
  };
  return {
    images: counts('images', values.images),
    pages: counts('pages', values.pages)[0]!,
    metas: counts('metas', values.metas)[0]!,
  };
}

const BATCH = 256;
const recordId = (i: number): string => `b${String(i).padStart(10, '0')}`;

/** A deterministic stream of uniform numbers in [0, 1) (mulberry32), so runs pick the same ids. */
function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function fill(sm: MetadataStateMachine, n: number): Promise<void> {
  let index = 0;
  const entry = (command: Command): Entry => ({
    term: 1,
    index: ++index,
    type: 'normal',
    data: encodeCommand(command),
  });
  const at = 1_700_000_000_000;
  await sm.apply(
    ['w1', 'w3'].map((nodeId, i) =>
      entry({ type: 'registerWorker', nodeId, url: `http://127.0.0.1:${9001 + i}`, zone: 'z', at }),
    ),
  );
  for (let from = 0; from < n; from += BATCH) {
    const commands: string[] = [];
    for (let i = from; i < Math.min(n, from + BATCH); i++) {
      const id = recordId(i);
      commands.push(
        `{"type":"recordObject","id":"${id}","size":0,"sha256":"${createHash('sha256').update(id).digest('hex')}","contentType":"image/jpeg","createdAt":${at + i},"replicas":["w3","w1"]}`,
      );
    }
    const data = `{"type":"commandBatch","requestId":"fill-${from}","commands":[${commands.join(',')}]}`;
    await sm.apply([{ term: 1, index: ++index, type: 'normal', data }]);
  }
}

interface Sample {
  p50: number;
  p99: number;
  cpuUs: number;
}

async function timed(count: number, op: (i: number) => Promise<void>): Promise<Sample> {
  const wall: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await op(i);
    wall.push(performance.now() - t);
  }
  const cpu = process.cpuUsage(cpu0);
  wall.sort((a, b) => a - b);
  return { p50: percentile(wall, 50), p99: percentile(wall, 99), cpuUs: (cpu.user + cpu.system) / count };
}

async function measure(
  sm: MetadataStateMachine,
  n: number,
  opts: Options,
): Promise<{ list: Sample; meta: Sample }> {
  const pick = uniform(n);
  // Cursors end 1,000 short of the last id, so every page is full whatever N.
  const listAfter = Array.from({ length: opts.pages }, () =>
    recordId(Math.floor(pick() * Math.max(1, n - 1000))),
  );
  const metaIds = Array.from({ length: opts.metas }, () => recordId(Math.floor(pick() * n)));
  const listPage = async (after: string): Promise<void> => {
    const page = await sm.listObjects({ limit: 1000, after });
    JSON.stringify({ items: page.items.map(toJson), next: page.next });
  };
  const meta = async (id: string): Promise<void> => {
    const object = await sm.getObject(id);
    if (!object) throw new Error(`no record ${id}`);
    JSON.stringify(toJson(object));
  };
  // Warm-up: the first reads pay for compiling the code, whatever the size.
  for (const after of listAfter.slice(0, 20)) await listPage(after);
  for (const id of metaIds.slice(0, 200)) await meta(id);
  return {
    list: await timed(opts.pages, (i) => listPage(listAfter[i]!)),
    meta: await timed(opts.metas, (i) => meta(metaIds[i]!)),
  };
}

/** Streams snapshots of the tables back to back until `stop` resolves: a busy event loop beside the reads. */
async function snapshotsBeside(sm: MetadataStateMachine, stop: Promise<void>): Promise<number> {
  let done = false;
  void stop.then(() => {
    done = true;
  });
  let taken = 0;
  while (!done) {
    for await (const chunk of sm.snapshotChunks()) {
      if (done) break;
      void chunk;
    }
    taken += 1;
  }
  return taken;
}

function line(label: string, n: number, r: { list: Sample; meta: Sample }, cpu = true): string {
  const f = (s: Sample) =>
    `${s.p50.toFixed(2)} / ${s.p99.toFixed(2)} ms${cpu ? `, cpu ${(s.cpuUs / 1000).toFixed(3)} ms` : ''}`;
  return `${String(n).padStart(9)}  ${label.padEnd(14)}  page of 1,000: ${f(r.list)}   meta: ${f(r.meta)}`;
}

async function runOne(n: number, opts: Options): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-bench-listlat-'));
  try {
    let sm = await MetadataStateMachine.open(dir);
    const t0 = performance.now();
    await fill(sm, n);
    const fillS = (performance.now() - t0) / 1000;
    process.stderr.write(`N=${n}: filled in ${fillS.toFixed(1)} s (${(n / fillS).toFixed(0)} records/s)\n`);
    console.log(line('after load', n, await measure(sm, n, opts)));
    let stop = (): void => {};
    const stopped = new Promise<void>((resolve) => {
      stop = resolve;
    });
    const snapshots = snapshotsBeside(sm, stopped);
    const beside = await measure(sm, n, opts);
    stop();
    // CPU is the process's, snapshots included: left out.
    console.log(`${line('by snapshots', n, beside, false)}   (${await snapshots} snapshots streamed)`);
    await sm.close();
    sm = await MetadataStateMachine.open(dir);
    console.log(line('reopened', n, await measure(sm, n, opts)));
    await sm.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const opts = parseOptions(process.argv.slice(2));
console.log(
  `bench listLatency: load average ${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')}`,
);
for (const n of opts.images) await runOne(n, opts);
