// Whether a state machine's LevelDB was stopped cleanly. Its apply batches are not fsynced (the
// Raft log is), and LevelDB opened without paranoid checks skips a torn record of its own log and
// replays the ones after it: after a power cut the tables could hold a later batch without an
// earlier one, with an applied index that claims both. Only a clean close makes every table write
// durable (the folder's files are fsynced after LevelDB closes) and then leaves a marker file in the
// folder (LevelDB leaves files it did not name alone); opening removes it, durably, before anything
// is written. A folder opened without the
// marker may be torn, and its owner rebuilds it from the Raft snapshot and log.

import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncPath } from '../fileWrites.ts';

const MARKER = 'IMGVAULT-CLEAN-STOP';

function markerPath(dir: string): string {
  return join(dir, MARKER);
}

/** True if `dir` was closed cleanly since it was last opened; consumes the marker either way. */
export async function takeCleanStopMarker(dir: string): Promise<boolean> {
  const marker = markerPath(dir);
  const clean = await stat(marker).then(
    () => true,
    () => false,
  );
  if (clean) {
    await rm(marker);
    await fsyncPath(dir);
  }
  return clean;
}

/** After the database in `dir` is closed: makes its files durable, then records the clean stop. */
export async function markCleanStop(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const file = join(dir, name);
    if ((await stat(file)).isFile()) await fsyncPath(file);
  }
  await fsyncPath(dir);
  await writeFile(markerPath(dir), 'clean\n', { flush: true });
  await fsyncPath(dir);
}
