// A process's own memory, sampled once a second, split into what can grow: the JS heap V8 has
// committed (per space), the buffers outside it, and the rest of the anonymous memory (malloc:
// LevelDB's memtables, caches, write batches and compaction buffers, and the arenas glibc keeps),
// beside the file pages (the node binary, LevelDB's mapped table files). VmHWM gives the peak of
// the sum only, not which part made it.

import { readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';

const MiB = 1024 * 1024;

export interface MemorySample {
  /** Milliseconds since the sampler started. */
  atMs: number;
  rss: number;
  rssAnon: number;
  rssFile: number;
  /** Pages V8 committed for its heap (every space), resident or not. */
  heapCommitted: number;
  heapUsed: number;
  /** ArrayBuffers and other memory V8 was told about, outside its heap (Buffers among them). */
  external: number;
  /** Anonymous memory neither V8's heap nor its external memory: malloc, LevelDB's among it. */
  nativeOther: number;
  /** Committed bytes of each V8 heap space (new_space, old_space, large_object_space, ...). */
  spaces: Record<string, number>;
}

function statusKiB(status: string, field: string): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
}

export function sampleMemory(startedAt: number): MemorySample {
  const status = readFileSync('/proc/self/status', 'utf8');
  const mem = process.memoryUsage();
  const spaces: Record<string, number> = {};
  for (const s of getHeapSpaceStatistics()) spaces[s.space_name] = s.space_size;
  const rssAnon = statusKiB(status, 'RssAnon');
  return {
    atMs: Math.round(performance.now() - startedAt),
    rss: statusKiB(status, 'VmRSS'),
    rssAnon,
    rssFile: statusKiB(status, 'RssFile'),
    heapCommitted: mem.heapTotal,
    heapUsed: mem.heapUsed,
    external: mem.external,
    nativeOther: Math.max(0, rssAnon - mem.heapTotal - mem.external),
    spaces,
  };
}

/** The highest of each figure over the samples, and the sample where RSS was highest. */
export class MemorySampler {
  private readonly startedAt = performance.now();
  private readonly timer: NodeJS.Timeout;
  private atPeak: MemorySample;
  private readonly peaks: MemorySample;

  /** `trace`: each sample also goes to stderr as it is taken (how the figures move over time). */
  constructor(private readonly trace = false) {
    this.atPeak = sampleMemory(this.startedAt);
    this.peaks = structuredClone(this.atPeak);
    this.timer = setInterval(() => this.sample(), 1_000);
    this.timer.unref();
  }

  sample(): void {
    const now = sampleMemory(this.startedAt);
    if (this.trace) console.error(`  [rx ${(now.atMs / 1000).toFixed(0)} s] ${describe(now)}`);
    if (now.rss >= this.atPeak.rss) this.atPeak = now;
    for (const key of [
      'rss',
      'rssAnon',
      'rssFile',
      'heapCommitted',
      'heapUsed',
      'external',
      'nativeOther',
    ] as const)
      this.peaks[key] = Math.max(this.peaks[key], now[key]);
    for (const [name, size] of Object.entries(now.spaces))
      this.peaks.spaces[name] = Math.max(this.peaks.spaces[name] ?? 0, size);
  }

  stop(): { atPeak: MemorySample; peaks: MemorySample } {
    clearInterval(this.timer);
    this.sample();
    return { atPeak: this.atPeak, peaks: this.peaks };
  }
}

const mib = (bytes: number): string => (bytes / MiB).toFixed(0);

/** One line: RSS and its split, then the V8 spaces of more than 1 MiB committed. */
export function describe(s: MemorySample): string {
  const spaces = Object.entries(s.spaces)
    .filter(([, size]) => size >= MiB)
    .map(([name, size]) => `${name.replace(/_space$/, '')} ${mib(size)}`)
    .join(', ');
  return (
    `rss ${mib(s.rss)} MiB = anon ${mib(s.rssAnon)} + file ${mib(s.rssFile)}; ` +
    `anon: V8 heap committed ${mib(s.heapCommitted)} (used ${mib(s.heapUsed)}), external ${mib(s.external)}, ` +
    `native other ${mib(s.nativeOther)}; spaces: ${spaces}`
  );
}
