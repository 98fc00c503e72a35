// A linearizability checker for the per-id image register, after Porcupine (anishathalye/porcupine,
// checker.go): the history of each id is checked on its own (P-compositionality: a history is
// linearizable iff each key's sub-history is), by Wing & Gong's depth-first search with Lowe's
// cache of (set of operations linearized, model state) pairs already explored.
//
// An operation whose outcome is unknown (a timeout, a cut connection, a 5xx) gets return time
// +Infinity and an `unknown` output: it may take effect at any point after its call, and taking
// effect after every observation is the same as never taking effect, so the model applies it.

/** What a client did to one id, and what it saw. sha256 names the bytes. */
export type Input = { kind: 'put'; sha256: string } | { kind: 'get' } | { kind: 'delete' };

/**
 * put: 201 `created`, 200 `same` (identical bytes already there), 409 `conflict`;
 * get: `found` with the sha256 of the bytes read, or `notFound`; delete: `deleted` (204) or
 * `notFound` (404); any: `unknown`.
 */
export type Output =
  | { kind: 'created' }
  | { kind: 'same' }
  | { kind: 'conflict' }
  | { kind: 'found'; sha256: string }
  | { kind: 'notFound' }
  | { kind: 'deleted' }
  | { kind: 'unknown' };

export interface Operation {
  id: string;
  client: string;
  input: Input;
  output: Output;
  /** Milliseconds (any monotonic clock shared by every client). */
  call: number;
  /** +Infinity when the outcome is unknown. */
  ret: number;
}

/** The register's state: the sha256 of the bytes the id names, or null when it names none. */
type State = string | null;

/** The next state when `input` returning `output` is legal in `state`, else undefined. */
export function step(state: State, input: Input, output: Output): { next: State } | undefined {
  if (output.kind === 'unknown') {
    if (input.kind === 'get') return { next: state };
    if (input.kind === 'delete') return { next: null };
    return { next: state === null ? input.sha256 : state };
  }
  switch (input.kind) {
    case 'put':
      if (output.kind === 'created') return state === null ? { next: input.sha256 } : undefined;
      if (output.kind === 'same') return state === input.sha256 ? { next: state } : undefined;
      if (output.kind === 'conflict')
        return state !== null && state !== input.sha256 ? { next: state } : undefined;
      return undefined;
    case 'get':
      if (output.kind === 'found') return state === output.sha256 ? { next: state } : undefined;
      if (output.kind === 'notFound') return state === null ? { next: state } : undefined;
      return undefined;
    case 'delete':
      if (output.kind === 'deleted') return state !== null ? { next: null } : undefined;
      if (output.kind === 'notFound') return state === null ? { next: state } : undefined;
      return undefined;
  }
}

export type Verdict = 'ok' | 'illegal' | 'unknown';

export interface IdVerdict {
  id: string;
  verdict: Verdict;
  operations: number;
}

interface Node {
  op: number;
  /** The return node of a call node; null on a return node. */
  match: Node | null;
  prev: Node | null;
  next: Node | null;
}

/** Calls and returns in time order, calls before returns at equal times, as a doubly linked list. */
function linkedEntries(ops: Operation[]): Node {
  const events: { time: number; isCall: boolean; node: Node }[] = [];
  ops.forEach((op, i) => {
    const ret: Node = { op: i, match: null, prev: null, next: null };
    events.push({ time: op.call, isCall: true, node: { op: i, match: ret, prev: null, next: null } });
    events.push({ time: op.ret, isCall: false, node: ret });
  });
  events.sort((a, b) => a.time - b.time || Number(b.isCall) - Number(a.isCall));
  const head: Node = { op: -1, match: null, prev: null, next: null };
  let tail = head;
  for (const { node } of events) {
    node.prev = tail;
    tail.next = node;
    tail = node;
  }
  return head;
}

function lift(call: Node): void {
  call.prev!.next = call.next;
  call.next!.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

function unlift(call: Node): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  call.next!.prev = call;
}

/**
 * Whether one id's operations are linearizable. `budget` bounds the search steps: past it the
 * verdict is `unknown` (neither a pass nor a violation), so one pathological history cannot hang a run.
 */
export function checkOne(ops: Operation[], budget = 2_000_000): Verdict {
  const head = linkedEntries(ops);
  const linearized = new Uint8Array(ops.length);
  const seen = new Set<string>();
  const calls: { node: Node; state: State }[] = [];
  let state: State = null;
  let entry = head.next;
  for (let steps = 0; head.next !== null; steps++) {
    if (steps > budget) return 'unknown';
    if (entry === null) return 'illegal';
    if (entry.match !== null) {
      const op = ops[entry.op]!;
      const result = step(state, op.input, op.output);
      if (result) {
        linearized[entry.op] = 1;
        const key = `${Buffer.from(linearized).toString('base64')}|${result.next ?? ''}`;
        if (!seen.has(key)) {
          seen.add(key);
          calls.push({ node: entry, state });
          state = result.next;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized[entry.op] = 0;
      }
      entry = entry.next;
    } else {
      // A return reached with its call not linearized: that call had to go before this point.
      const top = calls.pop();
      if (!top) return 'illegal';
      state = top.state;
      linearized[top.node.op] = 0;
      unlift(top.node);
      entry = top.node.next;
    }
  }
  return 'ok';
}

/** Checks every id's sub-history; returns the verdict of each id. */
export function checkHistory(ops: Operation[], budgetPerId?: number): IdVerdict[] {
  const byId = new Map<string, Operation[]>();
  for (const op of ops) {
    const list = byId.get(op.id);
    if (list) list.push(op);
    else byId.set(op.id, [op]);
  }
  return [...byId].map(([id, list]) => ({
    id,
    verdict: checkOne(list, budgetPerId),
    operations: list.length,
  }));
}
