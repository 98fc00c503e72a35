// A worker cut off the network answers nothing, not even a refusal: a read must give up on it
// after the first-byte timeout and serve the other replica, not wait out the long idle timeout.

import type { ChildProcess } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, expect, it } from 'vitest';
import type { ImageService } from '../../src/manager/imageService.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { until, WaitAborted } from '../helpers/until.ts';
import { EntryLog, MetadataFixture } from '../metadata/metadataFixture.ts';
import { startManagerStandIn } from '../storagenode/managerStandIn.ts';
import {
  makeDataDir,
  removeDir,
  SECRET,
  sha256Of,
  spawnWorkerProcess,
  startTempWorker,
} from '../storagenode/workerHarness.ts';
import { readingImageService } from './readingImageService.ts';

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

/**
 * An image service whose one image `cat` has its primary copy on `primaryUrl` (asked first: neither
 * worker has been heard) and its secondary on a real in-process worker holding the right bytes.
 */
async function imagesWithPrimaryOn(primaryUrl: string, workers: WorkerClient): Promise<ImageService> {
  const healthy = await startTempWorker((undo) => cleanups.push(undo));
  await workers.putBlob(healthy.url, 'cat', sha256Of(PNG), PNG.length, Readable.from([PNG]));
  const sm = await fx.machine();
  const log = new EntryLog();
  await sm.apply([
    log.command({ type: 'registerWorker', nodeId: 'w1', url: primaryUrl, zone: 'z1', at: 1000 }),
    log.command({ type: 'registerWorker', nodeId: 'w2', url: healthy.url, zone: 'z2', at: 1000 }),
  ]);
  await sm.apply([
    log.command({
      type: 'recordObject',
      id: 'cat',
      size: PNG.length,
      sha256: sha256Of(PNG),
      contentType: 'image/png',
      createdAt: 1,
      replicas: ['w1', 'w2'],
    }),
  ]);
  const { images, removeStaging } = await readingImageService({ metadata: sm, workers });
  cleanups.push(removeStaging);
  return images;
}

/** Reads `cat` whole: which worker served it, its bytes, and the seconds the read took. */
async function readCat(images: ImageService): Promise<{ nodeId: string; bytes: Buffer; seconds: number }> {
  const started = performance.now();
  const download = await images.open('cat', { method: 'GET' });
  const parts: Buffer[] = [];
  for await (const chunk of download.body) parts.push(Buffer.from(chunk as Uint8Array));
  return {
    nodeId: download.nodeId,
    bytes: Buffer.concat(parts),
    seconds: (performance.now() - started) / 1000,
  };
}

function newWorkerClient(readFirstByteTimeoutMs: number): WorkerClient {
  const workers = new WorkerClient({ secret: SECRET, readFirstByteTimeoutMs });
  cleanups.push(() => workers.close());
  return workers;
}

// Well under the 30 s idle timeout a silent worker used to hold a read for; generous for a loaded
// machine, where the first-byte timeout of 2 s is all a read should lose.
const BOUND_SECONDS = 15;

it('a read skips a replica whose worker never answers, within the first-byte timeout', async () => {
  const workers = newWorkerClient(2_000);
  const images = await imagesWithPrimaryOn(await silentServer(), workers);

  const read = await readCat(images);

  expect(read.nodeId).toBe('w2');
  expect(read.bytes.equals(PNG)).toBe(true);
  expect(read.seconds).toBeLessThan(BOUND_SECONDS);
}, 60_000);

/** A real worker process, registered with a stand-in manager; killed (and let go on) at cleanup. */
async function workerProcess(): Promise<{ child: ChildProcess; url: string }> {
  const manager = await startManagerStandIn(SECRET, { heartbeatIntervalMs: 1000 });
  const dataDir = await makeDataDir();
  const child = spawnWorkerProcess(['--id', 'w1', '--listen', '127.0.0.1:0'], {
    IMGVAULT_CLUSTER_SECRET: SECRET,
    IMGVAULT_DATA: dataDir,
    IMGVAULT_MANAGERS: manager.url,
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await exited;
    }
    await manager.close();
    await removeDir(dataDir);
  });
  await until(
    'the worker to register',
    () => {
      if (child.exitCode !== null) throw new WaitAborted('the worker exited before registering');
      return manager.registrations.length > 0;
    },
    30_000,
  );
  return { child, url: String(manager.registrations[0]!.header.url) };
}

it('a worker process stopped with SIGSTOP holds a read no longer than the first-byte timeout', async () => {
  const workers = newWorkerClient(2_000);
  const primary = await workerProcess();
  await workers.putBlob(primary.url, 'cat', sha256Of(PNG), PNG.length, Readable.from([PNG]));
  const images = await imagesWithPrimaryOn(primary.url, workers);
  // The first read leaves a keep-alive connection to the primary, the one the next read reuses.
  expect((await readCat(images)).nodeId).toBe('w1');

  // Its kernel still accepts and buffers requests: no refusal, no reset, just silence.
  primary.child.kill('SIGSTOP');
  const read = await readCat(images);

  expect(read.nodeId).toBe('w2');
  expect(read.bytes.equals(PNG)).toBe(true);
  expect(read.seconds).toBeLessThan(BOUND_SECONDS);
}, 90_000);

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
  const workers = newWorkerClient(400);
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;

  const response = await workers.getBlob(`http://127.0.0.1:${port}`, 'cat');
  const parts: Buffer[] = [];
  for await (const chunk of response.body) parts.push(Buffer.from(chunk as Uint8Array));

  expect(Buffer.concat(parts).equals(PNG)).toBe(true);
}, 30_000);
