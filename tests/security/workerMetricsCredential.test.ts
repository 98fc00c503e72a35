// A worker's metrics credential (written beside its other credentials, read by Prometheus) opens its
// GET /metrics and nothing else: a scraper holding it can neither read, list nor delete blobs.

import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import {
  ensureCredentialTree,
  METRICS_CREDENTIAL_FILE,
  readWorkerCredentials,
  workerDir,
} from '../../src/http/credentialFiles.ts';
import { BlobStore } from '../../src/storagenode/blobStore.ts';
import { createWorkerApp } from '../../src/storagenode/workerApp.ts';
import { makeDataDir, removeDir, sha256Of } from '../storagenode/workerHarness.ts';

let root: string;
let dataDir: string;
let store: BlobStore;
let server: ReturnType<typeof serve>;
let url: string;
let access: string;

beforeAll(async () => {
  root = await makeDataDir();
  dataDir = await makeDataDir();
  await ensureCredentialTree(root, ['w1', 'w2']);
  access = readWorkerCredentials(workerDir(root, 'w1'), 'w1').access;
  store = await BlobStore.open(dataDir);
  const worker = createWorkerApp({ store, secret: '', accessCredential: access, maxBlobBytes: 1 << 20 });
  server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: worker.app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => {
    server?.close(() => resolve());
    if (server && 'closeAllConnections' in server) server.closeAllConnections();
  });
  await store?.close();
  if (root) await removeDir(root);
  if (dataDir) await removeDir(dataDir);
});

const status = async (method: string, path: string, credential: string, body?: Buffer) =>
  (
    await fetch(`${url}${path}`, {
      method,
      headers: {
        [CLUSTER_SECRET_HEADER]: credential,
        ...(body ? { 'x-imgvault-sha256': sha256Of(body), 'content-type': 'application/octet-stream' } : {}),
      },
      ...(body ? { body } : {}),
      signal: AbortSignal.timeout(15_000),
    })
  ).status;

describe("a worker's metrics credential", () => {
  it('opens GET /metrics and nothing else', async () => {
    const bytes = Buffer.from('kept bytes');
    expect(await status('PUT', '/blobs/kept', access, bytes)).toBe(201);
    const scrape = (await readFile(join(workerDir(root, 'w1'), METRICS_CREDENTIAL_FILE), 'utf8')).trim();
    expect(await status('GET', '/metrics', scrape)).toBe(200);
    for (const [method, path] of [
      ['GET', '/blobs/kept'],
      ['DELETE', '/blobs/kept'],
      ['GET', '/inventory'],
      ['GET', '/stats'],
      ['POST', '/metrics'],
    ] as const) {
      expect(await status(method, path, scrape), `${method} ${path}`).toBe(401);
    }
    expect(await status('PUT', '/blobs/other', scrape, bytes)).toBe(401);
    expect(await status('GET', '/blobs/kept', access)).toBe(200);
    // Another worker's metrics credential opens nothing here.
    const other = (await readFile(join(workerDir(root, 'w2'), METRICS_CREDENTIAL_FILE), 'utf8')).trim();
    expect(await status('GET', '/metrics', other)).toBe(401);
  });

  it('is what deploy/prometheus.yml sends to every worker', async () => {
    const config = await readFile(join(import.meta.dirname, '../../deploy/prometheus.yml'), 'utf8');
    const files = [...config.matchAll(/files: \["([^"]+)"\]/g)].map((m) => m[1]);
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) expect(file).toMatch(/\/worker-[^/]+\/metrics\.credential$/);
  });
});
