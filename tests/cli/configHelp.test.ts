// `imgvault manager --help` and `imgvault worker --help` name, for every flag, the environment
// variable it falls back to, and that variable really sets the same field of the parsed config.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { registerManagerCommand } from '../../src/cli/managerCommand.ts';
import { createWorkerCommand } from '../../src/cli/workerCommand.ts';
import { MANAGER_KEY_FILES } from '../../src/http/credentialFiles.ts';
import { mintCredential, mintRaftCredential } from '../../src/http/credentials.ts';
import {
  loadManagerConfig,
  MANAGER_ENV,
  MANAGER_FLAG_ONLY,
  type ManagerConfig,
} from '../../src/manager/managerConfig.ts';
import {
  parseWorkerConfig,
  WORKER_CONFIG_FIELDS,
  type WorkerConfig,
} from '../../src/storagenode/workerConfig.ts';
import { makeTestCa, OPENSSL } from '../helpers/testCa.ts';

const dir = mkdtempSync(join(tmpdir(), 'config-help-'));
const secretFile = join(dir, 'secret');
writeFileSync(secretFile, 'a-secret-of-enough-length\n');
const tokensFile = join(dir, 'tokens');
writeFileSync(tokensFile, 'a-client-token-of-enough-length\n');
const readOnlyTokensFile = join(dir, 'read-only-tokens');
writeFileSync(readOnlyTokensFile, 'a-read-only-token-of-enough-length\n');
const keys = Object.fromEntries(
  ['raft', 'workers', 'access', 'operator'].map((role) => [role, `k-${role}-`.padEnd(40, 'x')]),
) as { raft: string; workers: string; access: string; operator: string };
const credentialsDir = join(dir, 'manager');
mkdirSync(credentialsDir);
for (const [role, file] of Object.entries(MANAGER_KEY_FILES)) {
  writeFileSync(join(credentialsDir, file), `${keys[role as keyof typeof keys]}\n`, { mode: 0o600 });
}
const workerCredentialsDir = join(dir, 'worker-w1');
mkdirSync(workerCredentialsDir);
writeFileSync(join(workerCredentialsDir, 'worker.credential'), mintCredential(keys.workers, 'worker', 'w1'));
writeFileSync(join(workerCredentialsDir, 'access.credential'), mintCredential(keys.access, 'access', 'w1'));
const metricsTokenFile = join(dir, 'metrics-token');
writeFileSync(metricsTokenFile, '# for Prometheus\na-metrics-token-of-enough-length\n');

// The TLS variables need real files; without openssl their samples are skipped.
const ca = OPENSSL === null ? null : await makeTestCa();
afterAll(() => {
  if (ca) rmSync(ca.dir, { recursive: true, force: true });
});
const pem = (file: string | undefined) => (file === undefined ? undefined : readFileSync(file, 'utf8'));
const TLS_KEYS = new Set(['tlsCert', 'tlsKey', 'tlsCa']);
/** --tls-cert and --tls-key go together, and with them every URL is https. */
function withTlsPartner(key: string, env: NodeJS.ProcessEnv, urlVars: string[]): void {
  if (key === 'tlsCert') env.IMGVAULT_TLS_KEY = ca?.keyFile;
  if (key === 'tlsKey') env.IMGVAULT_TLS_CERT = ca?.certFile;
  if (key === 'tlsCert' || key === 'tlsKey') {
    for (const v of urlVars) env[v] = env[v]?.replaceAll('http://', 'https://');
  }
}

function managerCommand(): Command {
  const program = new Command();
  registerManagerCommand(program);
  return program.commands.find((c) => c.name() === 'manager')!;
}

const MANAGER_BASE = {
  IMGVAULT_MANAGER_ID: 'm1',
  IMGVAULT_PEERS: 'm1=http://127.0.0.1:7001',
  IMGVAULT_DATA: '/tmp/x',
  IMGVAULT_CLUSTER_SECRET: 'a-secret-of-enough-length',
};

// Per flag: a value for its variable, and what the config then holds.
const MANAGER_SAMPLES: Record<keyof typeof MANAGER_ENV, [string, (c: ManagerConfig) => unknown, unknown]> = {
  id: ['m2', (c) => c.id, 'm2'],
  listen: ['127.0.0.1:7009', (c) => c.port, 7009],
  url: ['http://10.0.0.1:7001', (c) => c.url, 'http://10.0.0.1:7001'],
  data: ['/tmp/y', (c) => c.dataDir, '/tmp/y'],
  peers: ['m1=http://127.0.0.1:7001,m2=http://127.0.0.1:7002', (c) => Object.keys(c.peers), ['m1', 'm2']],
  join: ['1', (c) => c.join, true],
  secret: ['another-secret-of-length', (c) => c.secret, 'another-secret-of-length'],
  secretFile: [secretFile, (c) => c.secret, 'a-secret-of-enough-length'],
  tickMs: ['40', (c) => c.tickMs, 40],
  electionTick: ['12', (c) => c.electionTick, 12],
  heartbeatTick: ['2', (c) => c.heartbeatTick, 2],
  snapshotThreshold: ['77', (c) => c.snapshotThreshold, 77],
  leaderWaitMs: ['900', (c) => c.leaderWaitMs, 900],
  maxWaitingForLeader: ['7', (c) => c.maxWaitingForLeader, 7],
  mode: ['kv', (c) => c.mode, 'kv'],
  clientTokensFile: [tokensFile, (c) => c.clientTokens, ['a-client-token-of-enough-length']],
  metricsTokenFile: [metricsTokenFile, (c) => c.metricsTokens, ['a-metrics-token-of-enough-length']],
  maxImageBytes: ['1234', (c) => c.maxImageBytes, 1234],
  maxUploads: ['9', (c) => c.maxUploads, 9],
  maxUploadsPerClient: ['3', (c) => c.maxUploadsPerClient, 3],
  uploadWaitMs: ['250', (c) => c.uploadWaitMs, 250],
  maxWaitingUploads: ['12', (c) => c.maxWaitingUploads, 12],
  maxStagedBytes: ['1048576', (c) => c.maxStagedBytes, 1_048_576],
  maxStagedBytesPerClient: ['65536', (c) => c.maxStagedBytesPerClient, 65_536],
  stagingMemoryBytes: ['0', (c) => c.stagingMemoryBytes, 0],
  minUploadRate: ['0', (c) => c.minUploadBytesPerSecond, 0],
  uploadRateWindowMs: ['5000', (c) => c.uploadRateWindowMs, 5_000],
  suspectAfterMs: ['1500', (c) => c.suspectAfterMs, 1500],
  readFirstByteTimeoutMs: ['2500', (c) => c.readFirstByteTimeoutMs, 2_500],
  downAfterMs: ['45000', (c) => c.downAfterMs, 45_000],
  orphanGraceMs: ['5000', (c) => c.orphanGraceMs, 5_000],
  repairConcurrency: ['7', (c) => c.repairConcurrency, 7],
  heartbeatIntervalMs: ['700', (c) => c.heartbeatIntervalMs, 700],
  usageSummaryMs: ['900', (c) => c.usageSummaryMs, 900],
  credentialsDir: [
    credentialsDir,
    (c) => c.credentials.raftCredential('m1', 'm2'),
    mintRaftCredential(keys.raft, 'm1', 'm2'),
  ],
  readOnlyTokensFile: [readOnlyTokensFile, (c) => c.readOnlyTokens, ['a-read-only-token-of-enough-length']],
  tlsCert: [ca?.certFile ?? '', (c) => c.tls?.server?.cert, pem(ca?.certFile)],
  tlsKey: [ca?.keyFile ?? '', (c) => c.tls?.server?.key, pem(ca?.keyFile)],
  tlsCa: [ca?.caFile ?? '', (c) => c.tls?.ca, pem(ca?.caFile)],
  s3Port: ['7201', (c) => c.s3Port, 7201],
};

describe('imgvault manager --help', () => {
  const options = managerCommand().options.filter((o) => o.long !== '--help');

  const flagOnly = new Set<string>(MANAGER_FLAG_ONLY);

  it('names the environment variable of every flag, and every variable has its flag', () => {
    for (const o of options.filter((o) => !flagOnly.has(o.attributeName()))) {
      const key = o.attributeName() as keyof typeof MANAGER_ENV;
      expect(MANAGER_ENV[key], o.long).toBeDefined();
      expect(o.description, o.long).toContain(`env ${MANAGER_ENV[key]}`);
    }
    expect(
      options
        .map((o) => o.attributeName())
        .filter((k) => !flagOnly.has(k))
        .sort(),
    ).toEqual(Object.keys(MANAGER_ENV).sort());
  });

  it('keeps --bulk-record-load a flag only: no variable turns it on', () => {
    const bulk = options.find((o) => o.long === '--bulk-record-load');
    expect(bulk?.description).not.toMatch(/IMGVAULT_/);
    expect(loadManagerConfig({}, { ...MANAGER_BASE, IMGVAULT_BULK_RECORD_LOAD: '1' }).bulkRecordLoad).toBe(
      false,
    );
    expect(loadManagerConfig({ bulkRecordLoad: true }, MANAGER_BASE).bulkRecordLoad).toBe(true);
  });

  it('each named variable sets its field', () => {
    for (const [key, name] of Object.entries(MANAGER_ENV) as [keyof typeof MANAGER_ENV, string][]) {
      if (TLS_KEYS.has(key) && ca === null) continue;
      const [value, read, expected] = MANAGER_SAMPLES[key];
      const env: NodeJS.ProcessEnv = { ...MANAGER_BASE, [name]: value };
      withTlsPartner(key, env, ['IMGVAULT_PEERS']);
      if (key === 'secretFile') delete env.IMGVAULT_CLUSTER_SECRET;
      if (key === 'id') env.IMGVAULT_PEERS = 'm2=http://127.0.0.1:7002';
      expect(read(loadManagerConfig({}, env)), name).toEqual(expected);
    }
  });
});

const WORKER_BASE = {
  IMGVAULT_WORKER_ID: 'w1',
  IMGVAULT_MANAGERS: 'http://127.0.0.1:7001',
  IMGVAULT_CLUSTER_SECRET: 'a-secret-of-enough-length',
  IMGVAULT_DATA: '/tmp/w',
};

const WORKER_SAMPLES: Record<string, [string, (c: WorkerConfig) => unknown, unknown]> = {
  id: ['w9', (c) => c.id, 'w9'],
  listen: ['127.0.0.1:7109', (c) => c.listen.port, 7109],
  dataDir: ['/tmp/v', (c) => c.dataDir, '/tmp/v'],
  managers: ['http://127.0.0.1:7002', (c) => c.managers, ['http://127.0.0.1:7002']],
  zone: ['rack9', (c) => c.zone, 'rack9'],
  clusterSecret: ['another-secret-of-length', (c) => c.clusterSecret, 'another-secret-of-length'],
  maxBlobBytes: ['1MiB', (c) => c.maxBlobBytes, 1024 * 1024],
  quotaBytes: ['1GiB', (c) => c.quotaBytes, 1024 ** 3],
  registerAttempts: ['3', (c) => c.registerAttempts, 3],
  registerBackoffMs: ['250', (c) => c.registerBackoffMs, 250],
  heartbeatIntervalMs: ['600', (c) => c.heartbeatIntervalMs, 600],
  managerTimeoutMs: ['2500', (c) => c.managerTimeoutMs, 2_500],
  advertiseUrl: ['http://10.0.0.11:7101', (c) => c.advertiseUrl, 'http://10.0.0.11:7101'],
  rejoin: ['wipe', (c) => c.rejoin, 'wipe'],
  scrubBytesPerSec: ['0', (c) => c.scrubBytesPerSec, 0],
  scrubPauseMs: ['1234', (c) => c.scrubPauseMs, 1234],
  accessCredential: [
    workerCredentialsDir,
    (c) => c.accessCredential,
    mintCredential(keys.access, 'access', 'w1'),
  ],
  tlsCert: [ca?.certFile ?? '', (c) => c.tls?.server?.cert, pem(ca?.certFile)],
  tlsKey: [ca?.keyFile ?? '', (c) => c.tls?.server?.key, pem(ca?.keyFile)],
  tlsCa: [ca?.caFile ?? '', (c) => c.tls?.ca, pem(ca?.caFile)],
};

describe('imgvault worker --help', () => {
  const options = createWorkerCommand().options.filter((o) => o.long !== '--help');
  const fields = Object.entries(WORKER_CONFIG_FIELDS);

  it('names the environment variable of every flag, and every field has its flag', () => {
    for (const o of options) {
      const field = fields.find(([, f]) => f.flag === o.long);
      expect(field, o.long).toBeDefined();
      expect(o.description, o.long).toContain(field![1].env);
    }
    expect(fields.map(([, f]) => f.flag).sort()).toEqual(options.map((o) => o.long).sort());
  });

  it('each named variable sets its field', () => {
    for (const [name, f] of fields) {
      if (TLS_KEYS.has(name) && ca === null) continue;
      const [value, read, expected] = WORKER_SAMPLES[name]!;
      const env: NodeJS.ProcessEnv = { ...WORKER_BASE, [f.env]: value };
      withTlsPartner(name, env, ['IMGVAULT_MANAGERS']);
      expect(read(parseWorkerConfig({}, env)), f.env).toEqual(expected);
    }
  });
});
