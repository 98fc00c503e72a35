// Where credentials live on disk (`imgvault credentials init`, the embedded cluster, and the
// --credentials-dir of managers and workers): one folder per host kind, 0700, each file 0600.
//
//   <root>/manager/          raft.key workers.key access.key operator.key  -> every manager host
//   <root>/worker-<id>/      worker.credential access.credential           -> worker <id>'s host
//                            metrics.credential                            -> its Prometheus (GET /metrics only)
//   <root>/operator/         operator.credential                           -> the operator's machine

import { readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { metricsCredential, mintCredential, newKey, parseCredential, type RoleKeys } from './credentials.ts';

export const MANAGER_KEY_FILES: Readonly<Record<keyof RoleKeys, string>> = {
  raft: 'raft.key',
  workers: 'workers.key',
  access: 'access.key',
  operator: 'operator.key',
};
export const WORKER_CREDENTIAL_FILE = 'worker.credential';
export const ACCESS_CREDENTIAL_FILE = 'access.credential';
/** What Prometheus presents to a worker: opens its GET /metrics and nothing else. */
export const METRICS_CREDENTIAL_FILE = 'metrics.credential';
export const OPERATOR_CREDENTIAL_FILE = 'operator.credential';
/** The operator name `init` and the embedded cluster mint a credential for. */
export const DEFAULT_OPERATOR = 'admin';

export const managerDir = (root: string) => join(root, 'manager');
export const workerDir = (root: string, id: string) => join(root, `worker-${id}`);
export const operatorDir = (root: string) => join(root, 'operator');

// Reads are synchronous: they happen once, while a process parses its configuration.
function readText(file: string): string {
  const text = readFileSync(file, 'utf8').trim();
  if (text.length === 0) throw new Error(`${file} is empty`);
  return text;
}

/** Shorter keys are refused: `credentials init` writes 43 characters (32 random bytes). */
export const MIN_KEY_LENGTH = 32;

/** A key file: private to its owner (it mints every credential of its role) and long enough. */
function readKey(file: string): string {
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new Error(
      `${file} is readable by others (mode ${mode.toString(8)}): it mints credentials; chmod 600 ${file}`,
    );
  }
  const key = readText(file);
  if (key.length < MIN_KEY_LENGTH) {
    throw new Error(
      `${file} holds a key of ${key.length} characters, under ${MIN_KEY_LENGTH}: ` +
        'write a new one with imgvault credentials init',
    );
  }
  return key;
}

/** The four role keys of a manager's credentials folder. */
export function readManagerKeys(dir: string): RoleKeys {
  const entries = Object.entries(MANAGER_KEY_FILES).map(([role, file]) => [role, readKey(join(dir, file))]);
  return Object.fromEntries(entries) as RoleKeys;
}

export interface WorkerCredentials {
  /** What the worker presents to the managers: `worker.<id>.<mac>`. */
  own: string;
  /** What the managers present to the worker: `access.<id>.<mac>`. */
  access: string;
}

/** A worker's credentials folder; both files must name `id`. */
export function readWorkerCredentials(dir: string, id: string): WorkerCredentials {
  const own = readText(join(dir, WORKER_CREDENTIAL_FILE));
  const access = readText(join(dir, ACCESS_CREDENTIAL_FILE));
  for (const [file, text, role] of [
    [WORKER_CREDENTIAL_FILE, own, 'worker'],
    [ACCESS_CREDENTIAL_FILE, access, 'access'],
  ] as const) {
    const parsed = parseCredential(text);
    if (parsed?.role !== role || parsed.id !== id) {
      throw new Error(`${join(dir, file)} is not a ${role} credential of worker ${id}`);
    }
  }
  return { own, access };
}

export function readOperatorCredential(root: string): string {
  return readText(join(operatorDir(root), OPERATOR_CREDENTIAL_FILE));
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * Creates `dir` 0700 when it does not exist; an existing folder keeps its mode (it may be the
 * user's own, `--dir .`). The credential files inside are 0600 whatever their folder's mode.
 */
async function privateDir(dir: string): Promise<void> {
  const created = await mkdir(dir, { recursive: true, mode: 0o700 });
  if (created !== undefined) await chmod(dir, 0o700);
}

/** Writes `text` 0600, never over an existing file unless `replace`. Returns whether it wrote. */
async function writePrivate(file: string, text: string, replace = false): Promise<boolean> {
  if (!replace && (await exists(file))) return false;
  await writeFile(file, `${text}\n`, { mode: 0o600, flag: replace ? 'w' : 'wx' });
  await chmod(file, 0o600);
  return true;
}

/**
 * Credentials minted from keys that are gone: a new key would leave them refused with a bare 401,
 * so the caller is told which files to restore instead.
 */
async function refuseLostKeys(root: string, dir: string): Promise<void> {
  const files = Object.values(MANAGER_KEY_FILES);
  const missing = [];
  for (const file of files) if (!(await exists(join(dir, file)))) missing.push(file);
  if (missing.length === 0) return;
  const minted = (await readdir(root).catch(() => [] as string[])).filter(
    (name) => name.startsWith('worker-') || name === 'operator',
  );
  if (missing.length === files.length && minted.length === 0) return;
  throw new Error(
    `${dir} lacks ${missing.join(', ')}, which minted the credentials under ${root}` +
      `${minted.length ? ` (${minted.join(', ')})` : ''}: restore ${missing.length > 1 ? 'them' : 'it'} from a ` +
      'backup of that folder, or regenerate every credential (move the whole folder away, run ' +
      'imgvault credentials init again and give each host its new folder)',
  );
}

/**
 * A new manager folder gets every key; an existing one must hold them all (refuseLostKeys).
 * Returns the keys.
 */
export async function ensureManagerKeys(root: string): Promise<RoleKeys> {
  const dir = managerDir(root);
  await privateDir(root);
  await privateDir(dir);
  await refuseLostKeys(root, dir);
  for (const file of Object.values(MANAGER_KEY_FILES)) await writePrivate(join(dir, file), newKey());
  return readManagerKeys(dir);
}

/** Mints worker `id`'s folder from the manager keys; `replace` rewrites existing files. */
export async function writeWorkerCredentials(
  root: string,
  keys: RoleKeys,
  id: string,
  replace = false,
): Promise<string> {
  const dir = workerDir(root, id);
  await privateDir(dir);
  await writePrivate(join(dir, WORKER_CREDENTIAL_FILE), mintCredential(keys.workers, 'worker', id), replace);
  const access = mintCredential(keys.access, 'access', id);
  await writePrivate(join(dir, ACCESS_CREDENTIAL_FILE), access, replace);
  await writePrivate(join(dir, METRICS_CREDENTIAL_FILE), metricsCredential(access), replace);
  return dir;
}

export async function writeOperatorCredential(
  root: string,
  keys: RoleKeys,
  name = DEFAULT_OPERATOR,
  replace = false,
): Promise<string> {
  const dir = operatorDir(root);
  await privateDir(dir);
  await writePrivate(
    join(dir, OPERATOR_CREDENTIAL_FILE),
    mintCredential(keys.operator, 'operator', name),
    replace,
  );
  return dir;
}

/**
 * Every credential of a cluster with these workers under `root`, generating only what is missing
 * (the embedded cluster on each start: a folder from before per-role credentials gets them then).
 */
export async function ensureCredentialTree(root: string, workerIds: readonly string[]): Promise<RoleKeys> {
  const keys = await ensureManagerKeys(root);
  for (const id of workerIds) await writeWorkerCredentials(root, keys, id);
  await writeOperatorCredential(root, keys);
  return keys;
}
