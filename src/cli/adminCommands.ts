// Operator commands: leadership transfer, manager membership, worker drain, undrain and remove. Each sends
// the operator credential (or the single cluster secret) through ClusterClient (so a follower's 307 and a dead manager are ridden
// through), prints what it did, then waits, within a bound, for the outcome it asked for.

import { Command } from 'commander';
import { parseRaftView, type RaftView } from '../protocol/raftView.ts';
import {
  ClusterClient,
  DEFAULT_RETRY,
  managerUrls,
  runOperatorAction,
  secretHeaders,
  withOperatorOptions,
} from './clusterClient.ts';

interface AdminFlags {
  url?: string;
  /** The old name of --url on `worker drain`, still accepted. */
  managers?: string;
  secretFile?: string;
  waitMs?: string;
}

/** The leader answers membership and transfer requests only once done (up to 30 s): wait longer. */
const ADMIN_RETRY = { ...DEFAULT_RETRY, headersTimeoutMs: 45_000, totalMs: 120_000 };
const DEFAULT_WAIT_MS = 60_000;

interface DrainStatus {
  nodeId: string;
  state: string;
  objectsLeft: number;
}

function withAdminOptions(cmd: Command): Command {
  return withOperatorOptions(cmd).option(
    '--wait-ms <ms>',
    `how long to wait for the outcome (default ${DEFAULT_WAIT_MS})`,
  );
}

/** Flags may land on a parent that declares the same names (`manager --url`, `worker --managers`). */
function adminSetup(command: Command): { client: ClusterClient; waitMs: number } {
  const flags = command.optsWithGlobals<AdminFlags>();
  const urls = managerUrls(flags.url ?? flags.managers ?? process.env.IMGVAULT_MANAGERS);
  const waitMs = Math.max(0, Number(flags.waitMs ?? DEFAULT_WAIT_MS) || 0);
  return { client: new ClusterClient(urls, secretHeaders(flags.secretFile), ADMIN_RETRY), waitMs };
}

async function json<T>(
  client: ClusterClient,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  body?: unknown,
) {
  const { res } = await client.request(method, path, {
    ...(body === undefined
      ? {}
      : { body: () => JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    expect: [200, 202],
  });
  return (await res.body.json()) as T;
}

/** Polls `probe` every 250 ms until it returns a value; null once `waitMs` has passed. */
async function waitFor<T>(waitMs: number, probe: () => Promise<T | null>): Promise<T | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v !== null || Date.now() >= deadline) return v;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * The leader's Raft view: any manager tells where the leader is. The raft view takes the operator
 * credential the admin client sends even when client tokens close it to everyone else.
 */
async function leaderView(client: ClusterClient): Promise<RaftView | null> {
  const any = parseRaftView(await json<unknown>(client, 'GET', '/v1/cluster/raft'));
  if (any.role === 'leader') return any;
  if (!any.leader?.url) return null;
  const leader = new ClusterClient([any.leader.url], client.headers, { ...DEFAULT_RETRY, attempts: 1 });
  return parseRaftView(await json<unknown>(leader, 'GET', '/v1/cluster/raft'));
}

/** The leader's Raft view once `holds` it (polled); null once `waitMs` has passed. */
function leaderViewWhen(
  client: ClusterClient,
  waitMs: number,
  holds: (view: RaftView) => boolean,
): Promise<RaftView | null> {
  return waitFor(waitMs, async () => {
    const view = await leaderView(client);
    return view && holds(view) ? view : null;
  });
}

const membersOf = (v: RaftView) =>
  [...v.confState.voters, ...v.confState.learners.map((l) => `${l} (non-voter)`)].sort().join(', ');

export function createRaftCommand(): Command {
  const raft = new Command('raft').description(
    'Raft operations on the managers (operator credential required)',
  );
  withAdminOptions(
    raft
      .command('transfer-leader')
      .description('hand leadership to another voting manager, then wait until it leads')
      .argument('<id>', 'manager id to lead, e.g. m2'),
  ).action(
    runOperatorAction('raft transfer-leader', async (id: string, _flags: unknown, command: Command) => {
      const { client, waitMs } = adminSetup(command);
      console.log(`asking the leader to hand leadership to ${id}`);
      await json(client, 'POST', '/v1/cluster/transfer-leader', { to: id });
      const led = await leaderViewWhen(client, waitMs, (v) => v.id === id);
      if (!led) throw new Error(`${id} was asked to lead but does not lead after ${waitMs} ms`);
      console.log(`${id} leads now (term ${led.term})`);
    }),
  );
  return raft;
}

export function addMembershipCommands(manager: Command): void {
  withAdminOptions(
    manager
      .command('add')
      .description(
        'add a manager (started with `imgvault manager --join`): it joins as a non-voter and is promoted once caught up; waits for the promotion',
      )
      .argument('<id>', 'id of the new manager, e.g. m4')
      .argument('<url>', 'URL the others reach it at, e.g. http://10.0.0.4:7001'),
  ).action(
    runOperatorAction('manager add', async (id: string, url: string, _flags: unknown, command: Command) => {
      const { client, waitMs } = adminSetup(command);
      console.log(`adding ${id} (${url}) as a non-voter; the leader promotes it once it has caught up`);
      await json(client, 'POST', '/v1/cluster/members', { id, url });
      const v = await leaderViewWhen(client, waitMs, (view) => view.confState.voters.includes(id));
      if (!v) throw new Error(`${id} was added but is not a voter after ${waitMs} ms`);
      console.log(`${id} caught up and is a voter; members: ${membersOf(v)}`);
    }),
  );

  withAdminOptions(
    manager
      .command('remove')
      .description('remove a manager from the Raft membership (a dead one too); waits until it is gone')
      .argument('<id>', 'id of the manager to remove'),
  ).action(
    runOperatorAction('manager remove', async (id: string, _flags: unknown, command: Command) => {
      const { client, waitMs } = adminSetup(command);
      console.log(`removing ${id} from the managers`);
      const { res } = await client.request('DELETE', `/v1/cluster/members/${encodeURIComponent(id)}`, {
        expect: [200, 404],
      });
      await res.body.dump();
      // 404: not a member (any more). The goal is reached either way, also when a retry follows an
      // attempt whose answer was lost after it removed the member.
      if (res.statusCode === 404) console.log(`${id} is not a member`);
      const v = await leaderViewWhen(client, waitMs, ({ confState: { voters, learners } }) => {
        return !voters.includes(id) && !learners.includes(id);
      });
      if (!v) throw new Error(`${id} is still a member after ${waitMs} ms`);
      console.log(`${id} removed; members: ${membersOf(v)}`);
    }),
  );
}

export function createDrainCommand(): Command {
  return withAdminOptions(
    new Command('drain')
      .description(
        'mark a worker draining: the leader moves every object it holds elsewhere, then marks it drained; waits for that (bounded)',
      )
      .argument('<id>', 'node id of the worker to drain')
      .option('--managers <urls>', 'old name of --url [env IMGVAULT_MANAGERS]'),
  ).action(
    runOperatorAction('worker drain', async (id: string, _flags: unknown, command: Command) => {
      const { client, waitMs } = adminSetup(command);
      const path = `/v1/cluster/nodes/${encodeURIComponent(id)}/drain`;
      const started = await json<DrainStatus>(client, 'POST', path);
      console.log(`${id} is ${started.state}; ${started.objectsLeft} objects to move`);
      const done = await waitFor(waitMs, async () => {
        const s = await json<DrainStatus>(client, 'GET', path);
        return s.state === 'drained' ? s : null;
      });
      if (done) console.log(`${id} drained: it holds nothing the cluster needs and can be shut down`);
      else console.log(`${id} still draining after ${waitMs} ms; follow it with GET ${path}`);
    }),
  );
}

export function createUndrainCommand(): Command {
  return withAdminOptions(
    new Command('undrain')
      .description(
        'take a drain back: a draining or drained worker is up again (copies already moved stay where they went)',
      )
      .argument('<id>', 'node id of the worker'),
  ).action(
    runOperatorAction('worker undrain', async (id: string, _flags: unknown, command: Command) => {
      const { client } = adminSetup(command);
      const s = await json<DrainStatus>(
        client,
        'POST',
        `/v1/cluster/nodes/${encodeURIComponent(id)}/undrain`,
      );
      console.log(`${id} is ${s.state} again; it holds ${s.objectsLeft} objects`);
    }),
  );
}

interface RemovalAnswer {
  nodeId: string;
  removedAt: number;
  alreadyRemoved: boolean;
}

export function createRemoveCommand(): Command {
  return withOperatorOptions(
    new Command('remove')
      .description(
        'take a drained worker out of the cluster for good: its row leaves the node table and its id never registers again (refused unless it is drained and holds no copy)',
      )
      .argument('<id>', 'node id of the drained worker'),
  ).action(
    runOperatorAction('worker remove', async (id: string, _flags: unknown, command: Command) => {
      const { client } = adminSetup(command);
      const done = await json<RemovalAnswer>(client, 'DELETE', `/v1/cluster/nodes/${encodeURIComponent(id)}`);
      console.log(
        done.alreadyRemoved
          ? `${id} was already removed (${new Date(done.removedAt).toISOString()})`
          : `${id} removed from the cluster: its id never registers again; stop its process and retire its disk`,
      );
    }),
  );
}
