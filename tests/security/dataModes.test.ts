import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { keepNewFilesPrivate } from '../../src/fileWrites.ts';
import { InventorySpool } from '../../src/manager/inventorySpool.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { BlobStore } from '../../src/storagenode/blobStore.ts';

const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), Buffer.alloc(200, 1)]);

let root: string;
let umaskBefore: number;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-modes-'));
  umaskBefore = process.umask(0o022);
});
afterEach(async () => {
  process.umask(umaskBefore);
  await rm(root, { recursive: true, force: true });
});

/** Every path under `dir` (itself included) whose mode lets a user other than the owner in. */
async function openToOthers(dir: string): Promise<string[]> {
  const found: string[] = [];
  const visit = async (path: string) => {
    const s = await stat(path);
    if ((s.mode & 0o077) !== 0) found.push(`${path} ${(s.mode & 0o777).toString(8)}`);
    if (s.isDirectory()) for (const name of await readdir(path)) await visit(join(path, name));
  };
  await visit(dir);
  return found;
}

async function* once(bytes: Buffer): AsyncGenerator<Uint8Array> {
  yield bytes;
}

it('staged uploads, blobs and spooled inventories are private even under a permissive umask', async () => {
  const staging = await StagingArea.open(join(root, 'staging'));
  const staged = await staging.stage(once(PNG), 1 << 20);
  expect(staged.ok).toBe(true);
  const store = await BlobStore.open(join(root, 'worker'));
  const sha = createHash('sha256').update(PNG).digest('hex');
  expect((await store.writeAtomically('cat', once(PNG), sha, 1 << 20)).ok).toBe(true);
  await InventorySpool.prepare(join(root, 'spool'));
  const spool = await InventorySpool.write(
    join(root, 'spool'),
    'w1',
    (async function* () {
      yield { id: 'cat', size: PNG.length, sha256: sha };
    })(),
  );
  // LevelDB's own files (the blob index) follow the umask: only the folder's mode guards them here.
  const leveldb = (p: string) => p.includes(join('worker', 'index', ''));
  expect((await openToOthers(join(root, 'staging'))).filter((p) => !leveldb(p))).toEqual([]);
  expect((await openToOthers(join(root, 'worker'))).filter((p) => !leveldb(p))).toEqual([]);
  expect(await openToOthers(join(root, 'spool'))).toEqual([]);
  expect(spool.count).toBe(1);
  await store.close();
});

it('a folder an earlier version left open is closed when the store opens it again', async () => {
  const store = await BlobStore.open(join(root, 'worker'));
  await store.close();
  const { chmod } = await import('node:fs/promises');
  await chmod(join(root, 'worker'), 0o755);
  await chmod(join(root, 'worker', 'blobs'), 0o755);
  const again = await BlobStore.open(join(root, 'worker'));
  expect((await stat(join(root, 'worker'))).mode & 0o777).toBe(0o700);
  expect((await stat(join(root, 'worker', 'blobs'))).mode & 0o777).toBe(0o700);
  await again.close();
});

it('with the umask the manager and worker processes set, LevelDB files are private too', async () => {
  keepNewFilesPrivate();
  const log = await LevelLogStore.open(join(root, 'manager', 'raft'));
  await log.close();
  const metadata = await MetadataStateMachine.open(join(root, 'manager', 'metadata'));
  await metadata.close();
  const store = await BlobStore.open(join(root, 'worker'));
  await store.close();
  expect(await openToOthers(root)).toEqual([]);
});
