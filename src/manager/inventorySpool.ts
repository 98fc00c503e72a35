// A registering worker's inventory, spooled to a file on the leader while it arrives, so that
// rejoin reconciliation (which runs after the registration is answered) reads it back as a stream:
// the leader's memory does not grow with the number of blobs a worker holds. Spool files are
// transient, removed when their reconciliation ends and swept when the manager starts.

import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { makePrivateDir, PRIVATE_FILE_MODE } from '../fileWrites.ts';
import { ndjsonLines } from '../http/ndjson.ts';
import type { InventoryLine } from '../protocol/workerSchemas.ts';

/** An inventory line is far below this; a longer one in a spool file means the file is damaged. */
const MAX_SPOOLED_LINE_BYTES = 4096;

/** Thrown while spooling: the inventory is not in ascending id order (reconciliation merges on it). */
export class InventoryOutOfOrder extends Error {
  readonly code = 'InventoryOutOfOrder';
}

export class InventorySpool {
  private constructor(
    readonly path: string,
    /** Lines spooled. */
    readonly count: number,
  ) {}

  /** Creates the folder and removes what a crash left in it. */
  static async prepare(dir: string): Promise<void> {
    await makePrivateDir(dir);
    for (const name of await readdir(dir)) await rm(join(dir, name), { force: true, recursive: true });
  }

  /**
   * Writes `lines` to a new file in `dir`, with the file's backpressure, checking that ids come in
   * strictly ascending order. On any failure the partial file is removed before rethrowing.
   */
  static async write(
    dir: string,
    nodeId: string,
    lines: AsyncIterable<InventoryLine>,
  ): Promise<InventorySpool> {
    const path = join(dir, `${nodeId}.${randomBytes(6).toString('hex')}.ndjson`);
    const out = createWriteStream(path, { flags: 'wx', mode: PRIVATE_FILE_MODE });
    // Settles once the file is written and closed, or at its first error, whenever that comes.
    const written = finished(out);
    written.catch(() => {});
    let count = 0;
    let previous: string | undefined;
    try {
      for await (const line of lines) {
        if (previous !== undefined && line.id <= previous) {
          throw new InventoryOutOfOrder(
            `inventory ids must ascend: ${JSON.stringify(line.id)} came after ${JSON.stringify(previous)}`,
          );
        }
        previous = line.id;
        count += 1;
        const text = `${JSON.stringify({ id: line.id, size: line.size, sha256: line.sha256 })}\n`;
        if (!out.write(text)) await Promise.race([once(out, 'drain'), written]);
      }
      out.end();
      await written;
      return new InventorySpool(path, count);
    } catch (err) {
      out.destroy();
      await written.catch(() => {});
      await rm(path, { force: true });
      throw err;
    }
  }

  /** The spooled lines, in order; each call reads the file anew. */
  async *lines(): AsyncGenerator<InventoryLine> {
    for await (const text of ndjsonLines(createReadStream(this.path), MAX_SPOOLED_LINE_BYTES)) {
      yield JSON.parse(text) as InventoryLine;
    }
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
