// What the snapshot transfer tests share: a follower's snapshot routes on a real 127.0.0.1 server
// that record the pieces they are sent, a leader's sender with short retries, and the MsgSnap
// naming a file between members m1 (leader) and m2 (follower).

import type { AddressInfo } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { Hono } from 'hono';
import type { SnapshotFileRef, SnapshotFolder } from '../../src/consensus/snapshotFiles.ts';
import { describeSnapshot } from '../../src/consensus/snapshots.ts';
import { snapshotRoutes } from '../../src/consensus/transport/snapshotRoutes.ts';
import { SnapshotSender } from '../../src/consensus/transport/snapshotSender.ts';
import type { Message } from '../../src/consensus/types.ts';

export const PIECE = 256 * 1024;

export interface SnapshotReceiver {
  url: string;
  /** The messages the routes handed to the node. */
  delivered: Message[];
  /** Offsets of the PUTs, in arrival order. */
  offsets: number[];
  close(): Promise<void>;
}

export interface ReceiverOptions {
  putDelayMs?: number;
  /** Replaces the answer to a PUT at `offset` when it returns a response. */
  answer?: (offset: number) => Response | null;
}

/** The servers and senders of one test, all closed by close(). */
export class SnapshotTransferRig {
  private readonly servers = new Set<ServerType>();
  private readonly senders: SnapshotSender[] = [];

  constructor(private readonly secret: string) {}

  /** m2's snapshot routes over `folder`. */
  async receiver(folder: SnapshotFolder, opts: ReceiverOptions = {}): Promise<SnapshotReceiver> {
    const delivered: Message[] = [];
    const offsets: number[] = [];
    const app = new Hono();
    app.use('*', async (c, next) => {
      if (c.req.method === 'PUT') {
        const offset = Number(c.req.query('offset'));
        offsets.push(offset);
        await new Promise((resolve) => setTimeout(resolve, opts.putDelayMs ?? 0));
        const replaced = opts.answer?.(offset) ?? null;
        if (replaced !== null) return replaced;
      }
      await next();
    });
    const onMessage = (msg: Message) => delivered.push(msg) > 0;
    app.route('/', snapshotRoutes({ secret: this.secret, selfId: 'm2', folder, onMessage }));
    const { server, url } = await new Promise<{ server: ServerType; url: string }>((resolve) => {
      const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) =>
        resolve({ server, url: `http://127.0.0.1:${info.port}` }),
      );
    });
    this.servers.add(server);
    const close = async () => {
      if (!this.servers.delete(server)) return;
      await new Promise<void>((resolve) => server.close(() => resolve()));
    };
    return { url, delivered, offsets, close };
  }

  /** m1's sender of the files in `folder`, pushing each transfer's outcome to `statuses`. */
  sender(folder: SnapshotFolder, statuses: boolean[]): SnapshotSender {
    const s = new SnapshotSender({
      id: 'm1',
      folder,
      secret: this.secret,
      pieceBytes: PIECE,
      maxAttempts: 3,
      retryDelayMs: 20,
      onSnapshotStatus: (_peer, ok) => statuses.push(ok),
    });
    this.senders.push(s);
    return s;
  }

  async close(): Promise<void> {
    for (const s of this.senders.splice(0)) s.close();
    for (const server of [...this.servers]) {
      this.servers.delete(server);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }
}

/** The MsgSnap from m1 to m2 naming `file`, in the file's term. */
export function snapshotMessage(file: SnapshotFileRef): Message {
  const members = new Map([
    ['m1', 'http://127.0.0.1:1'],
    ['m2', 'http://127.0.0.1:2'],
  ]);
  return {
    type: 'MsgSnap',
    from: 'm1',
    to: 'm2',
    term: file.term,
    snapshot: {
      metadata: { index: file.index, term: file.term, confState: { voters: ['m1', 'm2'], learners: [] } },
      data: describeSnapshot(members, file),
    },
  };
}

/** `bytes` in pieces of 100,000, as a state machine's snapshot stream hands them over. */
export async function* chunksOf(bytes: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += 100_000) yield bytes.subarray(at, at + 100_000);
}
