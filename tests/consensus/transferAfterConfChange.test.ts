// A leadership transfer whose transferee learns of a committed conf change in the same breath as
// the leader's MsgTimeoutNow (as just after its own promotion): the transferee ignores that
// MsgTimeoutNow while the change is unapplied (Raft.hup, as etcd), so the driver must ask again,
// or transferLeadership waits out its whole timeout. Three in-process managers over real HTTP on
// 127.0.0.1; the messages to the transferee are held and then handed to it at once.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Message } from '../../src/consensus/types.ts';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import {
  closeAll,
  type InProcessManager,
  kvCluster,
  proposePut,
  stableLeader,
  startCluster,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

const SECRET = 'test-secret-transfer-conf-0123456789';

let root: string;
let managers: InProcessManager<KvStateMachine>[] = [];
/** Messages from and to this manager are dropped. */
let cutOff: string | null = null;
/** Once set, messages to this manager are kept in `held` instead of delivered. */
let holdFor: string | null = null;
const held: Message[] = [];
/** Called with each message on arrival, before the rules above. */
let watch: (to: string, msg: Message) => void = () => {};

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-transfer-conf-'));
  const base = kvCluster(root, SECRET);
  managers = await startCluster(['m1', 'm2', 'm3'], {
    ...base,
    replies: false,
    node: { ...base.node, membershipTimeoutMs: 6_000 },
    accept: (to, msg) => {
      watch(to, msg);
      if (cutOff !== null && (to === cutOff || msg.from === cutOff)) return false;
      if (to === holdFor) {
        held.push(msg);
        return false;
      }
      return true;
    },
  });
});

afterAll(async () => {
  await closeAll(managers);
  await rm(root, { recursive: true, force: true });
});

it('completes a transfer the transferee first ignored for a committed, unapplied conf change', async () => {
  const leader = await stableLeader(managers);
  await proposePut(leader.node, 'before', '1');
  const [to, other] = managers.filter((m) => m !== leader) as [
    InProcessManager<KvStateMachine>,
    InProcessManager<KvStateMachine>,
  ];
  // Only `to` can commit the conf change with the leader, so nothing tells `to` it is committed
  // before its own acknowledgement reaches the leader: from then on its messages are held.
  cutOff = other.id;
  // Nothing else is proposed meanwhile: the next entry is the conf change.
  const before = leader.node.status().lastIndex;
  watch = (dest, msg) => {
    if (
      dest === leader.id &&
      msg.from === to.id &&
      msg.type === 'MsgAppResp' &&
      !msg.reject &&
      (msg.index ?? 0) > before
    ) {
      holdFor = to.id;
    }
  };
  // A learner that never answers: its addLearner entry is the conf change; its promotion never comes.
  void leader.node.addMember('m9', 'http://127.0.0.1:9').catch(() => {});
  const ccIndex = await until('the conf change appended', () => {
    const last = leader.node.status().lastIndex;
    return last > before ? last : null;
  });
  await until(
    'the conf change committed on the leader',
    () => leader.node.status().commit >= ccIndex,
    10_000,
  );
  expect(holdFor).toBe(to.id);
  expect(to.node.status().applied).toBeLessThan(ccIndex);

  const transfer = leader.node.transferLeadership(to.id).then(
    () => 'done',
    (err: unknown) => String(err),
  );
  await until('the MsgTimeoutNow held', () => held.some((m) => m.type === 'MsgTimeoutNow'), 10_000);
  // Handed over at once: the commit reaches `to` with the MsgTimeoutNow, before it applies the change.
  holdFor = null;
  watch = () => {};
  for (const msg of held.splice(0)) to.node.receive(msg);
  cutOff = null;

  expect(await transfer).toBe('done');
  expect((await stableLeader(managers)).id).toBe(to.id);
}, 60_000);

it('takes writes again within a few election timeouts of a transfer to a member that is down', async () => {
  const leader = await stableLeader(managers);
  const down = managers.find((m) => m !== leader) as InProcessManager<KvStateMachine>;
  cutOff = down.id;
  try {
    const started = Date.now();
    const transfer = leader.node.transferLeadership(down.id).then(
      () => 'done',
      (err: unknown) => String(err),
    );
    // The leader refuses proposals while it transfers; asked again without end, it would refuse
    // some in every election timeout (200 ms here) until the transfer's wait (6 s) ran out. Past
    // the few times it asks again, every write is taken.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    let refused = 0;
    let n = 0;
    while (Date.now() - started < 5_000) {
      await proposePut(leader.node, `during-${n++}`, '1').catch(() => {
        refused += 1;
      });
    }
    expect(n).toBeGreaterThan(0);
    expect(refused).toBe(0);
    expect(await transfer).not.toBe('done');
  } finally {
    cutOff = null;
  }
}, 60_000);
