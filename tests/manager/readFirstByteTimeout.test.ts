// A worker cut off the network answers nothing, not even a refusal: a read must give up on it
// after the first-byte timeout and serve the other replica, not wait out the long idle timeout.

import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { CopyLocks } from '../../src/manager/copyLocks.ts';
import { ImageService } from '../../src/manager/imageService.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import { EntryLog, MetadataFixture } from '../metadata/metadataFixture.ts';
import { makeDataDir, removeDir, SECRET, sha256Of, startWorker } from '../storagenode/workerHarness.ts';

const fx = new MetadataFixture();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const undo of cleanups.splice(0).reverse()) await undo();
  await fx.cleanup();
});

const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), Buffer.alloc(5000, 7)]);

/** Accepts connections and reads requests, but never answers: what a cut-off host looks like. */
async function silentServer(): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return `http://127.0.0.1:${address.port}`;
}

it('a read skips a replica whose worker never answers, within the first-byte timeout', async () => {
  const silentUrl = await silentServer();
  const dataDir = await makeDataDir();
  const healthy = await startWorker(dataDir);
  const workers = new WorkerClient({ secret: SECRET, readFirstByteTimeoutMs: 2_000 });
  const stagingDir = await mkdtemp(join(tmpdir(), 'imgvault-staging-'));
  cleanups.push(async () => {
    await workers.close();
    await healthy.stop();
    await removeDir(dataDir);
    await rm(stagingDir, { recursive: true, force: true });
  });
  const sha256 = sha256Of(PNG);
  await workers.putBlob(healthy.url, 'cat', sha256, PNG.length, Readable.from([PNG]));

  const sm = await fx.machine();
  const log = new EntryLog();
  await sm.apply([
    log.command({ type: 'registerWorker', nodeId: 'w1', url: silentUrl, zone: 'z1', at: 1000 }),
    log.command({ type: 'registerWorker', nodeId: 'w2', url: healthy.url, zone: 'z2', at: 1000 }),
  ]);
  // The silent worker holds the primary copy: it is asked first.
  await sm.apply([
    log.command({
      type: 'recordObject',
      id: 'cat',
      size: PNG.length,
      sha256,
      contentType: 'image/png',
      createdAt: 1,
      replicas: ['w1', 'w2'],
    }),
  ]);
  const images = new ImageService({
    raft: {
      isLeader: () => true,
      leaderInfo: () => ({ id: 'm1', url: null }),
      readIndex: async () => {},
      propose: () => Promise.reject(new Error('no proposal expected')),
    },
    metadata: sm,
    staging: await StagingArea.open(stagingDir),
    workers,
    liveness: new WorkerLiveness({ suspectAfterMs: 1_000 }),
    log: createLogger('test'),
    maxImageBytes: 1 << 20,
    copies: new CopyLocks(),
  });

  const started = performance.now();
  const download = await images.open('cat', { method: 'GET' });
  const parts: Buffer[] = [];
  for await (const chunk of download.body) parts.push(Buffer.from(chunk as Uint8Array));
  const seconds = (performance.now() - started) / 1000;

  expect(download.nodeId).toBe('w2');
  expect(Buffer.concat(parts).equals(PNG)).toBe(true);
  // Well under the 30 s idle timeout a silent worker used to hold a read for; generous for a loaded machine.
  expect(seconds).toBeLessThan(15);
}, 60_000);

it('the first-byte timeout stops at the headers: a body that flows slowly is read whole', async () => {
  const server = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-length': String(PNG.length) });
    res.flushHeaders();
    // The body arrives over three times the first-byte timeout, well inside the idle timeout.
    const half = PNG.length / 2;
    setTimeout(() => res.write(PNG.subarray(0, half)), 700);
    setTimeout(() => res.end(PNG.subarray(half)), 1_500);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const workers = new WorkerClient({ secret: SECRET, readFirstByteTimeoutMs: 400 });
  cleanups.push(async () => {
    await workers.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;

  const response = await workers.getBlob(`http://127.0.0.1:${port}`, 'cat');
  const parts: Buffer[] = [];
  for await (const chunk of response.body) parts.push(Buffer.from(chunk as Uint8Array));

  expect(Buffer.concat(parts).equals(PNG)).toBe(true);
}, 30_000);
