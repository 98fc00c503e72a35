import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  advertisedUrl,
  parseByteSize,
  parseWorkerConfig,
  WorkerConfigError,
} from '../../src/storagenode/workerConfig.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'imgvault-wcfg-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const minimal = { id: 'w1', managers: 'http://127.0.0.1:7001' };
const secretEnv = { IMGVAULT_CLUSTER_SECRET: 's3cret' };

function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (err) {
    if (err instanceof WorkerConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a WorkerConfigError');
}

describe('worker configuration', () => {
  it('fills documented defaults', () => {
    const c = parseWorkerConfig(minimal, secretEnv);
    expect(c).toMatchObject({
      id: 'w1',
      listen: { host: '127.0.0.1', port: 7101 },
      dataDir: path.resolve('data/w1'),
      managers: ['http://127.0.0.1:7001'],
      zone: 'default',
      clusterSecret: 's3cret',
      maxBlobBytes: 1024 * 1024 * 1024,
      quotaBytes: undefined,
      registerAttempts: 10,
      registerBackoffMs: 500,
      heartbeatIntervalMs: 1000,
      managerTimeoutMs: 5000,
    });
    expect(advertisedUrl(c, 7101)).toBe('http://127.0.0.1:7101');
  });

  it('takes flags over environment variables over defaults', () => {
    const env = {
      ...secretEnv,
      IMGVAULT_WORKER_ID: 'from-env',
      IMGVAULT_ZONE: 'z-env',
      IMGVAULT_MAX_BLOB_BYTES: '2MiB',
      IMGVAULT_MANAGERS: 'http://a:1, http://b:2/',
    };
    const c = parseWorkerConfig({ id: 'from-flag', listen: '127.0.0.2:0' }, env);
    expect(c.id).toBe('from-flag');
    expect(c.zone).toBe('z-env');
    expect(c.maxBlobBytes).toBe(2 * 1024 * 1024);
    expect(c.managers).toEqual(['http://a:1', 'http://b:2']);
    expect(advertisedUrl(c, 40123)).toBe('http://127.0.0.2:40123');
  });

  it('reads the secret from a file, trimming the newline', async () => {
    const file = path.join(dir, 'secret');
    await writeFile(file, 'from-file\n');
    expect(parseWorkerConfig({ ...minimal, secretFile: file }, secretEnv).clusterSecret).toBe('from-file');
    expect(parseWorkerConfig(minimal, { IMGVAULT_CLUSTER_SECRET_FILE: file }).clusterSecret).toBe(
      'from-file',
    );
    const problems = problemsOf(() =>
      parseWorkerConfig({ ...minimal, secretFile: path.join(dir, 'none') }, {}),
    );
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(
      /^clusterSecret \(--secret-file \/ IMGVAULT_CLUSTER_SECRET_FILE\): cannot read/,
    );
  });

  it('names every bad field with its flag and variable', () => {
    const problems = problemsOf(() =>
      parseWorkerConfig(
        { listen: 'x:99999', managers: ' , ', registerAttempts: 'ten', heartbeatIntervalMs: '5' },
        {},
      ),
    );
    expect(problems.map((p) => p.split(':')[0])).toEqual([
      'id (--id / IMGVAULT_WORKER_ID)',
      'listen (--listen / IMGVAULT_LISTEN)',
      'managers (--managers / IMGVAULT_MANAGERS)',
      'clusterSecret (--secret-file / IMGVAULT_CLUSTER_SECRET)',
      'registerAttempts (--register-attempts / IMGVAULT_REGISTER_ATTEMPTS)',
      'heartbeatIntervalMs (--heartbeat-interval-ms / IMGVAULT_HEARTBEAT_INTERVAL_MS)',
    ]);
  });

  it('needs an advertised URL when listening on a wildcard address', () => {
    const problems = problemsOf(() => parseWorkerConfig({ ...minimal, listen: '0.0.0.0:7101' }, secretEnv));
    expect(problems[0]).toMatch(/^advertiseUrl \(--advertise-url \/ IMGVAULT_ADVERTISE_URL\): is required/);
    const c = parseWorkerConfig(
      { ...minimal, listen: '0.0.0.0:7101', advertiseUrl: 'http://w1.internal:7101/' },
      secretEnv,
    );
    expect(advertisedUrl(c, 7101)).toBe('http://w1.internal:7101');
  });

  it('refuses a quota smaller than the largest blob asked for', () => {
    const problems = problemsOf(() =>
      parseWorkerConfig({ ...minimal, quotaBytes: '1MiB', maxBlobBytes: '2MiB' }, secretEnv),
    );
    expect(problems[0]).toMatch(/^quotaBytes .*smaller than maxBlobBytes/);
  });

  it('lowers the default largest blob to a smaller quota', () => {
    const c = parseWorkerConfig({ ...minimal, quotaBytes: '1MiB' }, secretEnv);
    expect(c).toMatchObject({ maxBlobBytes: 1024 * 1024, quotaBytes: 1024 * 1024 });
    expect(parseWorkerConfig({ ...minimal, quotaBytes: '2GiB' }, secretEnv).maxBlobBytes).toBe(1024 ** 3);
  });

  it('parses byte sizes with binary and decimal units', () => {
    expect(parseByteSize('67108864')).toBe(67108864);
    expect(parseByteSize('64MiB')).toBe(64 * 1024 * 1024);
    expect(parseByteSize('1.5 GiB')).toBe(1.5 * 1024 ** 3);
    expect(parseByteSize('10GB')).toBe(10 * 1000 ** 3);
    expect(parseByteSize('12 parsecs')).toBeUndefined();
    expect(parseByteSize('-1')).toBeUndefined();
  });
});
