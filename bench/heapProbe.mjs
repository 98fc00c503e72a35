// Loaded into a benchmark's child processes (bench/soak.ts starts them with
// IMGVAULT_CHILD_NODE_ARGS="--expose-gc --import <this file>"): on SIGUSR2, a full garbage
// collection, then the heap still in use and the RSS go to <IMGVAULT_HEAP_PROBE_DIR>/<pid>.json.
// Heap used after a full GC grows only with what is still referenced: a leak. RSS that grows while
// it stays flat is a heap the collector has not given back (lazy), not a leak.

import { renameSync, writeFileSync } from 'node:fs';

const dir = process.env.IMGVAULT_HEAP_PROBE_DIR;
/** SIGUSR2's default action ends the process: the bench signals a pid only once this file exists. */
function write(sample) {
  const file = `${dir}/${process.pid}.json`;
  writeFileSync(`${file}.tmp`, JSON.stringify(sample));
  renameSync(`${file}.tmp`, file);
}

if (dir && typeof globalThis.gc === 'function') {
  process.on('SIGUSR2', () => {
    globalThis.gc();
    const m = process.memoryUsage();
    write({ at: Date.now(), heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, rss: m.rss });
  });
  write({ at: 0 });
}
