// Optional TLS for every listener and every internal call (docs/security.md, "TLS on the wire";
// how to turn it on: docs/operations.md, "TLS"). A process that serves HTTPS (`--tls-cert` +
// `--tls-key`) calls other processes over HTTPS only, trusting the CA bundle of `--tls-ca` (else
// the system's roots). The trust is process-wide: one manager or worker per process, and one place
// (`internalConnect`) builds the connection of every internal client, so no client can be left
// behind talking plain HTTP or trusting another CA.

import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import { Agent, buildConnector, setGlobalDispatcher } from 'undici';
import { z } from 'zod';

export const tlsSettingsSchema = z.object({
  /** PEM certificate chain and private key this process serves HTTPS with; none = plain HTTP. */
  server: z.object({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
  /** PEM bundle internal calls trust instead of the system's roots. */
  ca: z.string().min(1).optional(),
});

export type TlsSettings = z.infer<typeof tlsSettingsSchema>;

/** The files as given (flags or environment); undefined = not given. */
export interface TlsFiles {
  certFile?: string | undefined;
  keyFile?: string | undefined;
  caFile?: string | undefined;
}

/** A TLS file that is missing, unreadable, not PEM, expired, or a key that is not the cert's. */
export class TlsConfigError extends Error {
  readonly code = 'InvalidTlsConfig';
  constructor(message: string) {
    super(message);
    this.name = 'TlsConfigError';
  }
}

function readPem(what: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new TlsConfigError(`cannot read the ${what} ${file} (${code})`);
  }
}

/** The first certificate of a PEM file, or an error naming the file. */
function certificateIn(what: string, file: string, pem: string, now: Date): X509Certificate {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    throw new TlsConfigError(`the ${what} ${file} holds no PEM certificate`);
  }
  if (new Date(cert.validTo) < now) {
    throw new TlsConfigError(`the ${what} ${file} expired on ${cert.validTo}`);
  }
  return cert;
}

function privateKeyIn(file: string, pem: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch {
    throw new TlsConfigError(`the TLS key ${file} holds no PEM private key (or it is encrypted)`);
  }
}

/**
 * Reads and checks the TLS files once, at start-up: each is readable and PEM, the certificate is
 * not expired, the key is the certificate's. Undefined when no file is given (plain HTTP).
 */
export function loadTlsFiles(files: TlsFiles, now = new Date()): TlsSettings | undefined {
  const { certFile, keyFile, caFile } = files;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    const [given, missing] =
      certFile === undefined ? ['--tls-key', '--tls-cert'] : ['--tls-cert', '--tls-key'];
    throw new TlsConfigError(`${given} needs ${missing} too (HTTPS needs both the certificate and its key)`);
  }
  const settings: TlsSettings = {};
  if (certFile !== undefined && keyFile !== undefined) {
    const cert = readPem('TLS certificate', certFile);
    const key = readPem('TLS key', keyFile);
    const x509 = certificateIn('TLS certificate', certFile, cert, now);
    if (!x509.checkPrivateKey(privateKeyIn(keyFile, key))) {
      throw new TlsConfigError(`the TLS key ${keyFile} does not match the certificate ${certFile}`);
    }
    settings.server = { cert, key };
  }
  if (caFile !== undefined) {
    const ca = readPem('CA bundle', caFile);
    certificateIn('CA bundle', caFile, ca, now);
    settings.ca = ca;
  }
  try {
    createSecureContext({ ...settings.server, ...(settings.ca ? { ca: settings.ca } : {}) });
  } catch (err) {
    const names = [certFile, keyFile, caFile].filter((f) => f !== undefined).join(', ');
    throw new TlsConfigError(`the TLS files ${names} are not usable: ${(err as Error).message}`);
  }
  return settings.server === undefined && settings.ca === undefined ? undefined : settings;
}

/** What is wrong with `url` for a process with these settings: plain http with TLS on; '' if nothing. */
export function plainHttpProblem(settings: TlsSettings | undefined, what: string, url: string): string {
  if (settings?.server === undefined || url.startsWith('https://')) return '';
  return `${what} ${url} must be https:// when this process serves TLS (--tls-cert)`;
}

/** `serve()` options of @hono/node-server: HTTPS with the loaded files, else plain HTTP (none). */
export function httpsServeOptions(settings: TlsSettings | undefined) {
  if (settings?.server === undefined) return {};
  return {
    createServer: createHttpsServer,
    serverOptions: { cert: settings.server.cert, key: settings.server.key },
  };
}

interface InternalTrust {
  ca: string | undefined;
  /** This process serves HTTPS: it sends nothing (the cluster secret, image bytes) in clear. */
  httpsOnly: boolean;
}

let trust: InternalTrust = { ca: undefined, httpsOnly: false };

/**
 * Sets the process's internal trust, before any internal client is built: the undici dispatcher
 * every client without its own uses (undici's `request`, and Node's global `fetch`, which reads
 * the same global), and what `internalConnect` gives the clients that build their own.
 */
export function useInternalTls(settings: TlsSettings | undefined): void {
  if (settings === undefined) return;
  trust = { ca: settings.ca, httpsOnly: settings.server !== undefined };
  setGlobalDispatcher(new Agent({ connect: internalConnect() }));
}

/** The CLI's `--ca`: trust this CA bundle for https:// manager URLs; plain http stays allowed. */
export function trustCaFile(file: string): void {
  const ca = loadTlsFiles({ caFile: file })?.ca;
  useInternalTls({ ca });
}

export class PlainHttpRefused extends Error {
  readonly code = 'PlainHttpRefused';
  constructor(origin: string) {
    super(
      `refused to call ${origin} over plain http: this process serves TLS, so every internal call is https`,
    );
    this.name = 'PlainHttpRefused';
  }
}

/**
 * The `connect` option of an undici Agent or Pool for an internal call: the process's CA and, with
 * TLS on, a refusal of http: origins before any byte leaves. Without internal TLS it is `options`
 * unchanged, so a plain-HTTP cluster connects exactly as before.
 */
export function internalConnect(
  options: buildConnector.BuildOptions = {},
): buildConnector.BuildOptions | buildConnector.connector {
  const { ca, httpsOnly } = trust;
  if (ca === undefined && !httpsOnly) return options;
  const connect = buildConnector({ ...options, ...(ca !== undefined ? { ca } : {}) });
  if (!httpsOnly) return connect;
  return (opts, callback) => {
    if (opts.protocol !== 'https:') {
      callback(new PlainHttpRefused(`${opts.protocol}//${opts.hostname}:${opts.port}`), null);
      return;
    }
    connect(opts, callback);
  };
}
