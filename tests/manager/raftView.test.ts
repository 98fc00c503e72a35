// GET /v1/cluster/raft has one definition (src/protocol/raftView.ts): what a manager builds from its
// real node's status fits the schema every reader parses with, and an answer that does not fit is
// refused with the field named, never half read.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { RaftNode } from '../../src/consensus/raftNode.ts';
import { HttpTransport } from '../../src/consensus/transport/httpTransport.ts';
import { raftViewOf } from '../../src/manager/raftView.ts';
import { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import { parseRaftView } from '../../src/protocol/raftView.ts';
import { until } from '../helpers/until.ts';

let root: string;
let store: LevelLogStore;
let kv: KvStateMachine;
let transport: HttpTransport;
let node: RaftNode;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'raft-view-'));
  store = await LevelLogStore.open(join(root, 'raft'));
  kv = await KvStateMachine.open(join(root, 'kv'));
  transport = new HttpTransport({
    id: 'n1',
    secret: 'test-secret-0123456789abcdef',
    onUnreachable: () => {},
    onSnapshotStatus: () => {},
    onReply: () => {},
  });
  node = await RaftNode.start({
    id: 'n1',
    store,
    stateMachine: kv,
    transport,
    // Never contacted: a single voter elects itself.
    initialMembers: { n1: 'http://127.0.0.1:9' },
    tickMs: 20,
    onFatal: (err) => {
      throw err;
    },
  });
  await until('a single voter to elect itself', () => node.isLeader(), 10_000);
  // Applied means committed, which a single voter does only once its log is durable: its own
  // progress then stands at the end of its log.
  await node.propose(JSON.stringify({ op: 'put', key: 'k', value: 'v', requestId: 'r1' }), 'r1');
});

afterAll(async () => {
  await node?.stop();
  await transport?.close();
  await store?.close();
  await kv?.close();
  await rm(root, { recursive: true, force: true });
});

it("a leader's view, sent as JSON, parses whole, peers included", () => {
  const sent = JSON.parse(JSON.stringify(raftViewOf(node.status())));
  const view = parseRaftView(sent);
  expect(view).toEqual(sent);
  expect(view).toMatchObject({
    id: 'n1',
    role: 'leader',
    leader: { id: 'n1', url: 'http://127.0.0.1:9' },
    members: { n1: 'http://127.0.0.1:9' },
    confState: { voters: ['n1'], learners: [] },
  });
  expect(view.peers?.n1).toEqual({
    match: view.lastIndex,
    next: view.lastIndex + 1,
    state: 'replicate',
    isLearner: false,
    lastContactMs: 0,
  });
});

it('refuses an answer that does not fit, naming the field', () => {
  const view = JSON.parse(JSON.stringify(raftViewOf(node.status())));
  expect(() => parseRaftView({ ...view, members: undefined })).toThrow(/members/);
  expect(() => parseRaftView({ ...view, peers: { n1: { match: 1 } } })).toThrow(/peers/);
  expect(() => parseRaftView('<html>')).toThrow(/not a raft view/);
});
