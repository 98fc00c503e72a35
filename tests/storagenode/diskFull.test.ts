import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import {
  AUTH,
  type JsonAnswer,
  patternStream,
  type RunningWorker,
  sha256Of,
  sha256Stream,
  smallDiskForSuite,
  startWorker,
} from './workerHarness.ts';

/**
 * A real full disk: a 4 MiB tmpfs. Mounting needs root with CAP_SYS_ADMIN; where that is missing
 * (an unprivileged CI runner) the suite is skipped rather than faked. The quota test in
 * workerApp.test.ts covers the same 507 path without privileges.
 */
const disk = smallDiskForSuite('4m');

describe('a full disk', () => {
  it('answers 507 on ENOSPC, with or without content-length, leaves nothing behind, and recovers', async (ctx) => {
    if (!disk.mounted) ctx.skip();
    let w: RunningWorker | undefined;
    try {
      w = await startWorker(path.join(disk.dir, 'data'));
      const size = 8 * 1024 * 1024;
      const { sha256 } = await sha256Stream(patternStream(size, 2));
      for (const withLength of [true, false]) {
        const res = await request(`${w.url}/blobs/bigger-than-disk`, {
          method: 'PUT',
          body: patternStream(size, 2),
          headers: {
            ...AUTH,
            'x-imgvault-sha256': sha256,
            ...(withLength ? { 'content-length': String(size) } : {}),
          },
        });
        expect(res.statusCode).toBe(507);
        expect(((await res.body.json()) as JsonAnswer).error.code).toBe('InsufficientStorage');
        expect(await readdir(w.store.tmpDir)).toEqual([]);
        expect(w.store.counters()).toEqual({ blobCount: 0, blobBytes: 0, reservedBytes: 0 });
      }
      // The space came back with the temp file: a blob that fits is stored.
      const small = Buffer.from('fits on the small disk');
      const ok = await request(`${w.url}/blobs/small`, {
        method: 'PUT',
        body: small,
        headers: { ...AUTH, 'x-imgvault-sha256': sha256Of(small) },
      });
      expect(ok.statusCode).toBe(201);
      await ok.body.dump();
    } finally {
      await w?.stop();
    }
  });
});
