// The blob folder layout of a data folder: `blobs/ab/<id>` in 256 folders made when the data folder
// is set up (blobId.ts). Data folders of the earlier layout, `blobs/ab/cd/<id>` with second-level
// folders made as blobs arrived, are moved to it once, when the store opens them, before the
// start-up check looks for any file.

import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from '../fileWrites.ts';
import { errnoCode } from './errors.ts';

/** Present in `blobs/` once every blob sits one level down; a blob id never starts with a dot. */
export const LAYOUT_MARKER = '.one-level';

const TOP_FOLDERS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
/** A second-level folder of the old layout, or one this migration set aside (dot-prefixed). */
const OLD_FOLDER = /^\.?[0-9a-f]{2}$/;

export interface LayoutReport {
  /** Blob files moved up from second-level folders (0 once a data folder is migrated). */
  migratedBlobs: number;
}

/**
 * Makes the 256 `blobs/ab` folders (an existing one is fine) and, unless the marker says it was
 * done, moves every blob of the old layout up one level. Idempotent and safe to cut at any point:
 * a rename moves a blob whole, a rerun finishes what a crash left, and the marker is written, synced,
 * only after every move is durable. Needs the data folder to itself (the index's lock).
 */
export async function prepareBlobLayout(blobsDir: string): Promise<LayoutReport> {
  const present = new Set(await fs.readdir(blobsDir));
  await Promise.all(
    TOP_FOLDERS.filter((name) => !present.has(name)).map(async (name) => {
      try {
        await fs.mkdir(path.join(blobsDir, name), PRIVATE_DIR_MODE);
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
    }),
  );
  let migratedBlobs = 0;
  if (!present.has(LAYOUT_MARKER)) {
    for (const top of TOP_FOLDERS) migratedBlobs += await flattenFolder(path.join(blobsDir, top));
    writeMarker(blobsDir);
  }
  // Always: it also covers folders made by an earlier process that crashed before syncing them.
  fsyncPath(blobsDir);
  return { migratedBlobs };
}

/** Moves the blobs of `top`'s second-level folders into `top`, then removes those folders. */
async function flattenFolder(top: string): Promise<number> {
  const old = (await fs.readdir(top, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && OLD_FOLDER.test(e.name))
    .map((e) => e.name);
  if (old.length === 0) return 0;
  // Set aside under a dotted name first: a blob whose id is two hex digits may move into `top`
  // under the name of a folder not yet emptied.
  const aside = old.map((name) => {
    const dotted = name.startsWith('.') ? name : `.${name}`;
    if (dotted !== name) renameSync(path.join(top, name), path.join(top, dotted));
    return path.join(top, dotted);
  });
  let moved = 0;
  for (const dir of aside) {
    for (const name of await fs.readdir(dir)) {
      renameSync(path.join(dir, name), path.join(top, name));
      moved += 1;
    }
  }
  // The new names durable, then the old ones' removal, before the folders go.
  fsyncPath(top);
  for (const dir of aside) {
    fsyncPath(dir);
    await fs.rmdir(dir);
  }
  fsyncPath(top);
  return moved;
}

function writeMarker(blobsDir: string): void {
  const tmp = path.join(blobsDir, `${LAYOUT_MARKER}.tmp`);
  const fd = openSync(tmp, 'w', PRIVATE_FILE_MODE);
  try {
    writeFileSync(fd, 'blobs/ab/<id>: one level of 256 folders\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path.join(blobsDir, LAYOUT_MARKER));
}

function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
