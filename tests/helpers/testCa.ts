// A private CA and a certificate for 127.0.0.1 made with the openssl command, for the TLS tests:
// the same commands docs/operations.md gives operators. Tests skip (with the reason) without it.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const OPENSSL_CANDIDATES = ['/usr/bin/openssl', '/usr/local/bin/openssl', '/opt/homebrew/bin/openssl'];

/** The openssl command, or null when this machine has none. */
export const OPENSSL: string | null = OPENSSL_CANDIDATES.find((p) => existsSync(p)) ?? null;

export interface TestCa {
  dir: string;
  /** The CA's certificate: the bundle every process trusts (--tls-ca). */
  caFile: string;
  /** A certificate for IP 127.0.0.1 signed by the CA, and its key (--tls-cert, --tls-key). */
  certFile: string;
  keyFile: string;
}

function openssl(cwd: string, args: string[]): void {
  if (OPENSSL === null) throw new Error('no openssl command on this machine');
  execFileSync(OPENSSL, args, { cwd, stdio: 'pipe', timeout: 30_000 });
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A CA named `name` in a new temp folder, with one host certificate for 127.0.0.1. */
export async function makeTestCa(name = 'imgvault test CA'): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), 'test-ca-'));
  openssl(dir, [
    'req',
    '-x509',
    ...EC_KEY,
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  openssl(dir, ['req', ...EC_KEY, '-keyout', 'host.key', '-out', 'host.csr', '-subj', '/CN=127.0.0.1']);
  await writeFile(join(dir, 'host.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    'host.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'host.pem',
    '-days',
    '2',
    '-extfile',
    'host.ext',
  ]);
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    certFile: join(dir, 'host.pem'),
    keyFile: join(dir, 'host.key'),
  };
}
