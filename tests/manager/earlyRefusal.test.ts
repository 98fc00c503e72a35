// A worker refuses a PUT it has no room for (507) on its declared length, before reading a byte of
// the body: a quota, or a disk without its reserve. Answered with the connection closed under a
// leader still writing the body, the answer raced the leader's write error: in about half the tries
// the leader saw EPIPE or ECONNRESET instead of the 507, and an upload every worker refused got
// 503 NoLiveWorker instead of 507 InsufficientStorage. A real worker process, a real WorkerClient.

import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerCallError, WorkerClient } from '../../src/manager/workerClient.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { until, WaitAborted } from '../helpers/until.ts';
import { type ManagerStandIn, startManagerStandIn } from '../storagenode/managerStandIn.ts';
import { exitOf, spawnWorkerProcess, type WorkerChild } from '../storagenode/workerHarness.ts';

const SECRET = 'early-refusal-secret';
const SIZE = 4 * 1024 * 1024;
const CHUNK = 64 * 1024;
const BYTES = Buffer.alloc(SIZE, 0x42);
const SHA = createHash('sha256').update(BYTES).digest('hex');

let manager: ManagerStandIn;
let dataDir: string;
let child: WorkerChild;
let url: string;
let client: WorkerClient;

beforeAll(async () => {
  manager = await startManagerStandIn(SECRET, { heartbeatIntervalMs: 1000 });
  dataDir = await mkdtemp(path.join(tmpdir(), 'imgvault-early-refusal-'));
  child = spawnWorkerProcess(
    ['--id', 'w-full', '--listen', '127.0.0.1:0', '--data', dataDir, '--managers', manager.url],
    { IMGVAULT_CLUSTER_SECRET: SECRET, IMGVAULT_QUOTA_BYTES: '6MiB' },
  );
  url = await until(
    'the worker to register',
    () => {
      if (child.exitCode !== null) throw new WaitAborted(`worker exited early: ${child.stderrText()}`);
      return manager.registrations[0]?.header.url as string | undefined;
    },
    20_000,
  );
  client = new WorkerClient({ secret: SECRET, idleTimeoutMs: 5_000 });
}, 30_000);

afterAll(async () => {
  await client?.close();
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    await exitOf(child, 15_000);
  }
  await manager?.close();
  await rm(dataDir, { recursive: true, force: true });
});

/** The body as a leader sends it: chunk by chunk, still being written when the answer comes. */
const body = () =>
  Readable.from(Array.from({ length: SIZE / CHUNK }, (_, i) => BYTES.subarray(i * CHUNK, (i + 1) * CHUNK)));

const outcome = (put: Promise<unknown>) =>
  put.then(
    (ok) => String(ok),
    (err: unknown) => (err instanceof WorkerCallError ? (err.status ?? err.code) : String(err)),
  );

describe('a worker refusing a PUT before reading its body', () => {
  it('is heard as 507 every time, plain and streamed with a checksum trailer', async () => {
    // Half the quota taken: every further PUT of this size is refused on its declared length.
    expect(await client.putBlob(url, 'first', SHA, SIZE, body())).toBe('created');
    const seen: (string | number)[] = [];
    for (let i = 0; i < 20; i++) {
      seen.push(await outcome(client.putBlob(url, `p${i}`, SHA, SIZE, body())));
      const sums = () => ({ sha256: SHA, crc32c: crc32cHex(BYTES) });
      seen.push(await outcome(client.putBlobStreamed(url, `s${i}`, SIZE, body(), sums)));
    }
    expect(seen).toEqual(Array(40).fill(507));
  }, 60_000);
});
