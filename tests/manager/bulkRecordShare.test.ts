// The bulk route's share of the batch proposer's queue (bulkRecordRoutes.ts): concurrent bulk
// requests wait for room among themselves, so an upload's command beside them is never dropped.

import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { ManagerCredentials } from '../../src/http/credentials.ts';
import { BULK_QUEUE_SHARE, bulkRecordRoutes } from '../../src/manager/http/bulkRecordRoutes.ts';
import type { RaftAccess } from '../../src/manager/imageService.ts';
import {
  BatchProposer,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_QUEUED,
} from '../../src/metadata/batchProposer.ts';
import { MAX_BATCH_COMMANDS } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { type CommandProposer, proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { EntryLog, MetadataFixture, recordCmd, registerCmd } from '../metadata/metadataFixture.ts';

const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

/** A one-member log applying entries in order; between `close()` and `open()` it holds them. */
class GatedLog implements CommandProposer {
  private readonly log = new EntryLog();
  private tail: Promise<unknown> = Promise.resolve();
  private release: () => void = () => {};
  private gate: Promise<void> = Promise.resolve();
  pending = 0;

  constructor(private readonly sm: MetadataStateMachine) {}

  close(): void {
    this.gate = new Promise<void>((resolve) => {
      this.release = resolve;
    });
  }

  open(): void {
    this.release();
  }

  propose(data: string, requestId: string): Promise<unknown> {
    this.pending += 1;
    const next = this.tail
      .then(() => this.gate)
      .then(async () => {
        const results = await this.sm.apply([this.log.raw(data)]);
        return results.find((r) => r.requestId === requestId)?.result;
      })
      .finally(() => {
        this.pending -= 1;
      });
    this.tail = next.catch(() => {});
    return next;
  }
}

async function until(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function bulkRecord(id: string) {
  const { type, ...rest } = recordCmd(id, ['w1', 'w2']);
  return { type, ...rest };
}

describe('bulk records beside uploads', () => {
  it('eight concurrent bulk requests leave room in the queue for a burst of uploads proposed meanwhile', async () => {
    const sm = await fx.machine();
    const node = new GatedLog(sm);
    await proposeCommand(node, registerCmd('w1'));
    await proposeCommand(node, registerCmd('w2'));
    node.close();

    const batcher = new BatchProposer(node);
    let bulkCalls = 0;
    const raft: RaftAccess = {
      propose: (data, requestId) => {
        bulkCalls += 1;
        return batcher.propose(data, requestId);
      },
      isLeader: () => true,
      leaderInfo: () => ({ id: 'm1', url: null }),
      readIndex: async () => {},
    };
    const app = bulkRecordRoutes({ raft, credentials: ManagerCredentials.singleSecret('s3cret') });
    // More records than the whole queue holds beside the entries in flight.
    const requests = 8;
    expect(requests * 1000).toBeGreaterThan(DEFAULT_MAX_QUEUED + DEFAULT_MAX_IN_FLIGHT * MAX_BATCH_COMMANDS);
    const answers = Array.from({ length: requests }, (_, r) =>
      app.request('/v1/cluster/bulk-records', {
        method: 'POST',
        headers: { 'content-type': 'application/json', [CLUSTER_SECRET_HEADER]: 's3cret' },
        body: JSON.stringify({ records: Array.from({ length: 1000 }, (_, i) => bulkRecord(`b${r}-${i}`)) }),
      }),
    );
    // The bulk records take what they may of the queue while the log holds every entry.
    // The bulk records take what they may of the queue while the log holds every entry: the count
    // of their proposals reaches the share and then stays there.
    await until(
      () => bulkCalls >= BULK_QUEUE_SHARE && node.pending === DEFAULT_MAX_IN_FLIGHT,
      'the bulk records',
    );
    let seen = -1;
    while (seen !== bulkCalls) {
      seen = bulkCalls;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const bulkWaiting = bulkCalls;

    const uploads = Array.from({ length: 1500 }, (_, i) =>
      proposeCommand(batcher, recordCmd(`upload${i}`, ['w1', 'w2'])),
    );
    node.open();
    const settled = await Promise.allSettled(uploads);
    const bodies = await Promise.all(
      answers.map(async (pending) => {
        const res = await pending;
        return [res.status, await res.json()];
      }),
    );
    const refused = settled.filter((s) => s.status === 'rejected').map((s) => String(s.reason));
    expect(refused).toEqual([]);
    expect(settled.every((s) => s.status === 'fulfilled' && s.value.ok && s.value.created)).toBe(true);
    expect(bulkWaiting).toBe(BULK_QUEUE_SHARE);
    for (const answer of bodies) expect(answer).toEqual([200, { created: 1000, existing: 0, rejected: [] }]);
    expect((await sm.stats()).objects).toBe(requests * 1000 + 1500);
  }, 60_000);
});
