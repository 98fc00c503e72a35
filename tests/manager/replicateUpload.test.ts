import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import type { PlacementCandidate } from '../../src/manager/placement.ts';
import { NoLiveWorker, replicateUpload } from '../../src/manager/replicateUpload.ts';
import type { StagedUpload } from '../../src/manager/stagingArea.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import {
  makeDataDir,
  type RunningWorker,
  removeDir,
  SECRET,
  sha256Of,
  startWorker,
} from '../storagenode/workerHarness.ts';
import { candidate } from './uploadCandidates.ts';

const log = createLogger('test');

describe('replicateUpload against real workers', () => {
  const workers: Record<string, RunningWorker> = {};
  let dir: string;
  let staged: StagedUpload;
  const client = new WorkerClient({ secret: SECRET, idleTimeoutMs: 5000 });
  const bytes = Buffer.alloc(300_000, 7);

  beforeAll(async () => {
    for (const id of ['w1', 'w2', 'w3']) workers[id] = await startWorker(await makeDataDir());
    // A worker with a 1 KiB quota refuses every copy with 507: the fallback must route around it.
    workers.full = await startWorker(await makeDataDir(), { quotaBytes: 1024 });
    dir = await mkdtemp(join(tmpdir(), 'imgvault-replicate-'));
    const path = join(dir, 'staged');
    await writeFile(path, bytes);
    staged = {
      path,
      size: bytes.length,
      sha256: sha256Of(bytes),
      crc32c: crc32cHex(bytes),
      contentType: 'image/png',
    };
  });

  afterAll(async () => {
    await client.close();
    for (const w of Object.values(workers)) {
      await w.stop();
      await removeDir(w.dataDir);
    }
    await rm(dir, { recursive: true, force: true });
  });

  const directory = (nodes: PlacementCandidate[], urls: Record<string, string>) => ({
    candidates: () => nodes,
    urlOf: (id: string) => urls[id],
  });

  it('stores the primary on the least used worker and the secondary in another zone', async () => {
    const nodes = [candidate('w1', 'z1', 10), candidate('w2', 'z1', 0), candidate('w3', 'z2', 50)];
    const urls = { w1: workers.w1!.url, w2: workers.w2!.url, w3: workers.w3!.url };
    const result = await replicateUpload({
      id: 'img-zones',
      staged,
      workers: directory(nodes, urls),
      client,
      log,
    });
    expect(result.replicas).toEqual(['w2', 'w3']);
    for (const nodeId of result.replicas) {
      const stat = await workers[nodeId]!.store.stat('img-zones');
      expect(stat).toMatchObject({ ok: true, value: { size: bytes.length, sha256: staged.sha256 } });
    }
  });

  it('replaces a target that refuses the copy by the next live worker, and counts the fallback', async () => {
    const nodes = [candidate('full', 'z1', 0), candidate('w1', 'z1', 10), candidate('w3', 'z2', 50)];
    const urls = { full: workers.full!.url, w1: workers.w1!.url, w3: workers.w3!.url };
    const fallbacks: string[] = [];
    const result = await replicateUpload({
      id: 'img-fallback',
      staged,
      workers: directory(nodes, urls),
      client,
      log,
      onFallback: (nodeId) => fallbacks.push(nodeId),
    });
    expect(fallbacks).toEqual(['full']);
    expect(result.replicas).toEqual(['w1', 'w3']);
    expect((await workers.full!.store.stat('img-fallback')).ok).toBe(false);
  });

  it('replaces a worker that is not listening at all', async () => {
    const nodes = [candidate('gone', 'z1', 0), candidate('w1', 'z1', 10), candidate('w2', 'z2', 20)];
    const urls = { gone: 'http://127.0.0.1:1', w1: workers.w1!.url, w2: workers.w2!.url };
    const result = await replicateUpload({
      id: 'img-gone',
      staged,
      workers: directory(nodes, urls),
      client,
      log,
    });
    expect(result.replicas).toEqual(['w1', 'w2']);
  });

  it('gives up with NoLiveWorker when fewer than two workers can take a copy', async () => {
    const nodes = [candidate('w1', 'z1'), candidate('full', 'z2')];
    const urls = { w1: workers.w1!.url, full: workers.full!.url };
    const attempt = replicateUpload({
      id: 'img-short',
      staged,
      workers: directory(nodes, urls),
      client,
      log,
    });
    await expect(attempt).rejects.toBeInstanceOf(NoLiveWorker);
    // Both copies are placed at once, so either may be the one left without a worker; the refusal is named.
    await expect(attempt).rejects.toThrow(/full \(507\)/);
    // The only other worker refused for room (507): the cluster is out of space, not of workers.
    await expect(attempt).rejects.toMatchObject({ full: true });
  });

  it('says the workers are out of room when none has space for the image', async () => {
    const cramped = (nodeId: string, zone: string): PlacementCandidate => ({
      ...candidate(nodeId, zone, 99),
      diskFree: 1_000,
    });
    const attempt = replicateUpload({
      id: 'img-no-room',
      staged,
      workers: directory([cramped('w1', 'z1'), cramped('w2', 'z2')], {
        w1: workers.w1!.url,
        w2: workers.w2!.url,
      }),
      client,
      log,
    });
    await expect(attempt).rejects.toMatchObject({ code: 'NoLiveWorker', full: true });
    await expect(attempt).rejects.toThrow(/no live worker has room/);
  });

  it('abandons a copy to a worker that goes silent mid-transfer and places it elsewhere', async () => {
    // A frozen worker: takes the request and never answers (SIGSTOP, a hung host).
    let started!: () => void;
    const reached = new Promise<void>((resolve) => (started = resolve));
    const frozen = createServer((req) => {
      req.resume();
      started();
    });
    await new Promise<void>((resolve) => frozen.listen(0, '127.0.0.1', resolve));
    const frozenUrl = `http://127.0.0.1:${(frozen.address() as AddressInfo).port}`;
    // Its answer bound far beyond the test's timeout: only the abandon can move the copy.
    const patient = new WorkerClient({ secret: SECRET, idleTimeoutMs: 120_000, putAnswerTimeoutMs: 120_000 });
    const clock = { now: 1_000_000 };
    const liveness = new WorkerLiveness({ suspectAfterMs: 3_000, now: () => clock.now });
    const hear = (...ids: string[]) => {
      for (const nodeId of ids)
        liveness.heard({ nodeId, diskUsed: 0, diskFree: 1e12, objectCount: 0, lastSeen: clock.now });
    };
    hear('frozen', 'w1', 'w3');
    try {
      const nodes = [candidate('frozen', 'z1', 0), candidate('w1', 'z1', 10), candidate('w3', 'z2', 50)];
      const urls = { frozen: frozenUrl, w1: workers.w1!.url, w3: workers.w3!.url };
      const upload = replicateUpload({
        id: 'img-frozen',
        staged,
        workers: { ...directory(nodes, urls), sendingTo: (id: string) => liveness.sendingTo(id) },
        client: patient,
        log,
      });
      await reached;
      // Nothing abandoned while the worker is heard; then it falls silent past the suspect timeout.
      expect(liveness.abandonSilentCopies()).toEqual([]);
      clock.now += 3_001;
      hear('w1', 'w3');
      expect(liveness.abandonSilentCopies()).toEqual(['frozen']);
      const result = await upload;
      expect(result.replicas).not.toContain('frozen');
      expect(result.replicas).toHaveLength(2);
      for (const nodeId of result.replicas)
        expect((await workers[nodeId]!.store.stat('img-frozen')).ok).toBe(true);
    } finally {
      await patient.close();
      frozen.closeAllConnections();
      await new Promise((resolve) => frozen.close(resolve));
    }
  }, 20_000);

  it('says no worker is live, not full, when only one worker is up', async () => {
    const attempt = replicateUpload({
      id: 'img-alone',
      staged,
      workers: directory([candidate('w1', 'z1'), { ...candidate('w2', 'z2'), state: 'down' }], {
        w1: workers.w1!.url,
        w2: workers.w2!.url,
      }),
      client,
      log,
    });
    await expect(attempt).rejects.toMatchObject({ code: 'NoLiveWorker', full: false });
  });
});
