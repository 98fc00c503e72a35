// GET /v1/cluster/raft has one definition (src/protocol/raftView.ts): what a manager builds from its
// real node's status fits the schema every reader parses with, and an answer that does not fit is
// refused with the field named, never half read.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { raftViewOf } from '../../src/manager/raftView.ts';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import { parseRaftView } from '../../src/protocol/raftView.ts';
import { openKv, type SoleManager, startSoleManager, stopSoleManager } from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

let root: string;
let manager: SoleManager<KvStateMachine> | undefined;
const status = () => manager!.node.status();

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'raft-view-'));
  manager = await startSoleManager(root, {
    openStateMachine: openKv,
    node: {
      tickMs: 20,
      onFatal: (err) => {
        throw err;
      },
    },
  });
  const { node } = manager;
  await until('a single voter to elect itself', () => node.isLeader(), 10_000);
  // Applied means committed, which a single voter does only once its log is durable: its own
  // progress then stands at the end of its log.
  await node.propose(JSON.stringify({ op: 'put', key: 'k', value: 'v', requestId: 'r1' }), 'r1');
});

afterAll(async () => {
  if (manager) await stopSoleManager(manager);
  await rm(root, { recursive: true, force: true });
});

it("a leader's view, sent as JSON, parses whole, peers included", () => {
  const sent = JSON.parse(JSON.stringify(raftViewOf(status())));
  const view = parseRaftView(sent);
  expect(view).toEqual(sent);
  expect(view).toMatchObject({
    id: 'm1',
    role: 'leader',
    leader: { id: 'm1', url: 'http://127.0.0.1:1' },
    members: { m1: 'http://127.0.0.1:1' },
    confState: { voters: ['m1'], learners: [] },
  });
  expect(view.peers?.m1).toEqual({
    match: view.lastIndex,
    next: view.lastIndex + 1,
    state: 'replicate',
    isLearner: false,
    lastContactMs: 0,
  });
});

it('refuses an answer that does not fit, naming the field', () => {
  const view = JSON.parse(JSON.stringify(raftViewOf(status())));
  expect(() => parseRaftView({ ...view, members: undefined })).toThrow(/members/);
  expect(() => parseRaftView({ ...view, peers: { m1: { match: 1 } } })).toThrow(/peers/);
  expect(() => parseRaftView('<html>')).toThrow(/not a raft view/);
});
