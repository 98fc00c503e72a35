// The one line a process prints when its disk stops it names a full disk in words, whether the
// filesystem said ENOSPC or LevelDB hid it in the cause of "Database failed to open". Real LevelDB,
// with /dev/full (every write fails with ENOSPC) where its first file goes.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeStorageFailure, isDiskFull, messageWithCauses } from '../src/storageFailure.ts';

let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'storage-failure-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function openError(location: string): Promise<unknown> {
  const db = new ClassicLevel(location);
  try {
    await db.open();
  } catch (err) {
    return err;
  }
  await db.close();
  throw new Error(`${location} opened`);
}

describe.skipIf(!existsSync('/dev/full'))('a full disk', () => {
  it("behind LevelDB's open: found in the cause, said in words with the folder", async () => {
    const location = join(root, 'index');
    await mkdir(location);
    await symlink('/dev/full', join(location, 'MANIFEST-000001'));
    const err = await openError(location);
    expect((err as Error).message).toBe('Database failed to open');
    expect(isDiskFull(err)).toBe(true);
    expect(describeStorageFailure(err, root)).toBe(
      `the disk holding ${root} is full (No space left on device): free space there; it cannot run until then`,
    );
  });

  it('from the filesystem (ENOSPC)', async () => {
    const err = await writeFile('/dev/full', 'x').catch((e: unknown) => e);
    expect(isDiskFull(err)).toBe(true);
  });
});

describe('another failure', () => {
  it("keeps LevelDB's reason from its cause, and is not called a full disk", async () => {
    const location = join(root, 'a-file');
    await writeFile(location, 'not a folder');
    const err = await openError(location);
    expect(isDiskFull(err)).toBe(false);
    const line = describeStorageFailure(err, root);
    expect(line).toMatch(/^Database failed to open: .+/);
    expect(line).toBe(messageWithCauses(err));
  });
});
