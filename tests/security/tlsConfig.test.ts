// TLS files are checked once, at start-up: a missing, unreadable, non-PEM or mismatched file is a
// one-line error naming the file (exit 2 for a command), and with TLS on no URL may be plain http.

import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTlsFiles, TlsConfigError } from '../../src/http/tls.ts';
import { checkStoredMembership } from '../../src/manager/bootstrapGuard.ts';
import { loadManagerConfig } from '../../src/manager/managerConfig.ts';
import { advertisedUrl, parseWorkerConfig, WorkerConfigError } from '../../src/storagenode/workerConfig.ts';
import { makeTestCa, OPENSSL, type TestCa } from '../helpers/testCa.ts';
import { runCli } from '../integration/imageCluster.ts';

const skip = OPENSSL === null ? 'no openssl command on this machine to make a test CA' : false;
const ca: TestCa | null = skip ? null : await makeTestCa();
const other: TestCa | null = skip ? null : await makeTestCa('another CA');

afterAll(() => {
  for (const c of [ca, other]) if (c) rmSync(c.dir, { recursive: true, force: true });
});

function tlsError(files: Parameters<typeof loadTlsFiles>[0]): string {
  try {
    loadTlsFiles(files);
  } catch (err) {
    expect(err).toBeInstanceOf(TlsConfigError);
    return (err as Error).message;
  }
  throw new Error('the TLS files were accepted');
}

const SECRET = 'a-secret-of-enough-length';

describe.skipIf(skip)(`TLS files (${skip || 'openssl'})`, () => {
  const c = ca!;
  const o = other!;

  it('loads a matching certificate and key, and a CA bundle', () => {
    const s = loadTlsFiles(c);
    expect(s?.server?.cert).toContain('BEGIN CERTIFICATE');
    expect(s?.server?.key).toContain('PRIVATE KEY');
    expect(s?.ca).toContain('BEGIN CERTIFICATE');
    expect(loadTlsFiles({})).toBeUndefined();
  });

  it('needs the certificate and the key together', () => {
    expect(tlsError({ certFile: c.certFile })).toMatch(/--tls-cert needs --tls-key/);
    expect(tlsError({ keyFile: c.keyFile })).toMatch(/--tls-key needs --tls-cert/);
  });

  it('names a file it cannot read', () => {
    const missing = join(c.dir, 'no-such.pem');
    expect(tlsError({ certFile: missing, keyFile: c.keyFile })).toBe(
      `cannot read the TLS certificate ${missing} (ENOENT)`,
    );
    expect(tlsError({ caFile: missing })).toBe(`cannot read the CA bundle ${missing} (ENOENT)`);
  });

  it('names a file that holds no PEM certificate or key', () => {
    const junk = join(c.dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    expect(tlsError({ certFile: junk, keyFile: c.keyFile })).toBe(
      `the TLS certificate ${junk} holds no PEM certificate`,
    );
    expect(tlsError({ certFile: c.certFile, keyFile: junk })).toMatch(
      new RegExp(`^the TLS key ${junk} holds no PEM private key`),
    );
    expect(tlsError({ caFile: junk })).toBe(`the CA bundle ${junk} holds no PEM certificate`);
  });

  it('refuses a key that is not the certificate’s', () => {
    expect(tlsError({ certFile: c.certFile, keyFile: o.keyFile })).toBe(
      `the TLS key ${o.keyFile} does not match the certificate ${c.certFile}`,
    );
  });

  it('refuses an expired certificate', () => {
    const later = new Date(Date.now() + 3 * 24 * 3_600_000);
    expect(() => loadTlsFiles({ caFile: c.caFile }, later)).toThrow(
      new RegExp(`^the CA bundle ${c.caFile} expired on `),
    );
  });

  it('a manager serving TLS defaults to an https URL and refuses plain-http peers', () => {
    const base = { IMGVAULT_DATA: '/tmp/x', IMGVAULT_CLUSTER_SECRET: SECRET };
    const flags = { id: 'm1', listen: '127.0.0.1:7001', tlsCert: c.certFile, tlsKey: c.keyFile };
    const config = loadManagerConfig({ ...flags, join: true }, base);
    expect(config.url).toBe('https://127.0.0.1:7001');
    expect(() =>
      loadManagerConfig({ ...flags, peers: 'm1=https://127.0.0.1:7001,m2=http://127.0.0.1:7002' }, base),
    ).toThrow(/peer m2 http:\/\/127\.0\.0\.1:7002 must be https:\/\//);
    // The CA alone (a manager that trusts https peers but serves plain HTTP) changes no URL.
    const trusting = loadManagerConfig(
      { id: 'm1', peers: 'm1=http://127.0.0.1:7001', tlsCa: c.caFile },
      base,
    );
    expect(trusting.url).toBe('http://127.0.0.1:7001');
    expect(trusting.tls?.server).toBeUndefined();
  });

  it('a worker serving TLS advertises https and refuses plain-http manager URLs', () => {
    const env = { IMGVAULT_CLUSTER_SECRET: SECRET, IMGVAULT_DATA: '/tmp/w' };
    const flags = { id: 'w1', listen: '127.0.0.1:0', tlsCert: c.certFile, tlsKey: c.keyFile };
    const config = parseWorkerConfig({ ...flags, managers: 'https://127.0.0.1:7001' }, env);
    expect(advertisedUrl(config, 7101)).toBe('https://127.0.0.1:7101');
    expect(() => parseWorkerConfig({ ...flags, managers: 'http://127.0.0.1:7001' }, env)).toThrow(
      /managers \(--managers \/ IMGVAULT_MANAGERS\) http:\/\/127\.0\.0\.1:7001 must be https:\/\//,
    );
    let problems: string[] = [];
    try {
      parseWorkerConfig({ ...flags, tlsKey: o.keyFile, managers: 'https://127.0.0.1:7001' }, env);
    } catch (err) {
      expect(err).toBeInstanceOf(WorkerConfigError);
      problems = (err as WorkerConfigError).problems;
    }
    expect(problems).toEqual([`tls: the TLS key ${o.keyFile} does not match the certificate ${c.certFile}`]);
  });

  it('`imgvault manager` with a mismatched key exits 2 with one line naming the file', async () => {
    const { code, stderr } = await runCli([
      'manager',
      '--id',
      'm1',
      '--peers',
      'm1=https://127.0.0.1:7001',
      '--data',
      join(c.dir, 'm1'),
      '--secret',
      SECRET,
      '--tls-cert',
      c.certFile,
      '--tls-key',
      o.keyFile,
    ]);
    expect(code).toBe(2);
    expect(stderr.trim()).toBe(
      `imgvault manager: the TLS key ${o.keyFile} does not match the certificate ${c.certFile}`,
    );
  });

  it('`imgvault status --ca` with an unreadable bundle exits 2 naming it', async () => {
    const missing = join(c.dir, 'missing-ca.pem');
    const { code, stderr } = await runCli(['status', '--ca', missing, '--url', 'https://127.0.0.1:9']);
    expect(code).toBe(2);
    expect(stderr.trim()).toBe(`imgvault: --ca: cannot read the CA bundle ${missing} (ENOENT)`);
  });
});

it('a manager restarted with TLS on a folder recorded at its http URL is told it cannot switch in place', () => {
  const check = (url: string) =>
    checkStoredMembership({ selfId: 'm1', url, dataDir: '/d', members: { m1: 'http://127.0.0.1:7001' } });
  expect(() => check('https://127.0.0.1:7001')).toThrow(/cannot switch between http and https in place/);
  expect(() => check('https://127.0.0.1:7002')).toThrow(/belongs to another cluster/);
  expect(() => check('http://127.0.0.1:7001')).not.toThrow();
});
