// Property tests over the Raft message decoder: the real POST /raft/messages route (cluster secret,
// body limit, JSON, schema) fed random and mutated batches. Whatever arrives, the route answers
// (never throws, never 5xx), and every message it hands the node is one the schema accepts, with
// safe-integer terms and indexes: a bad batch is refused whole, never passed on in part.

import fc from 'fast-check';
import { expect, it } from 'vitest';
import { messageBatchSchema, messageSchema } from '../../src/consensus/transport/messageSchema.ts';
import { RAFT_MESSAGES_PATH, raftRoutes } from '../../src/consensus/transport/raftRoutes.ts';
import { MESSAGE_TYPES, type Message } from '../../src/consensus/types.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { createLogger } from '../../src/logging.ts';

const SECRET = 'raft-decoder-secret-0123456789';
const delivered: Message[] = [];
let deliveredInAll = 0;
const app = raftRoutes({
  secret: SECRET,
  selfId: 'm1',
  onMessage: (msg) => {
    delivered.push(msg);
    deliveredInAll += 1;
  },
  maxBodyBytes: 256 * 1024,
  log: createLogger('test'),
});

const count = fc.oneof(fc.nat(), fc.constantFrom(0, 2 ** 53 - 1, 2 ** 31));
const nodeId = fc.oneof(fc.constantFrom('m1', 'm2', 'm3'), fc.string({ minLength: 1, maxLength: 8 }));
const entry = fc.record({
  term: count,
  index: count,
  type: fc.constantFrom('normal', 'confChange'),
  data: fc.string({ maxLength: 40 }),
});
const message = fc.record(
  {
    type: fc.constantFrom(...MESSAGE_TYPES),
    from: nodeId,
    to: fc.constant('m1'),
    term: count,
    logTerm: count,
    index: count,
    entries: fc.array(entry, { maxLength: 3 }),
    commit: count,
    reject: fc.boolean(),
    rejectHint: count,
    context: fc.string({ maxLength: 20 }),
  },
  { requiredKeys: ['type', 'from', 'to', 'term'] },
);

/** A value put where a field was: the wrong type, out of range, or hostile. */
const hostile = fc.oneof(
  fc.anything(),
  fc.constantFrom(-1, 1.5, 2 ** 53, Number.MAX_VALUE, '1', null, [], {}, '__proto__', 'x'.repeat(300)),
);

/** A valid batch with one field of one message replaced, removed, or one unknown field added. */
const mutatedBatch = fc
  .tuple(fc.array(message, { minLength: 1, maxLength: 4 }), fc.nat(), fc.string({ maxLength: 12 }), hostile)
  .chain(([messages, at, key, value]) =>
    fc.constantFrom('replace', 'remove', 'add').map((how) => {
      const copy = messages.map((m) => ({ ...m })) as Record<string, unknown>[];
      const target = copy[at % copy.length]!;
      const keys = Object.keys(target);
      const field = keys[at % keys.length]!;
      if (how === 'replace') target[field] = value;
      if (how === 'remove') delete target[field];
      if (how === 'add') target[key] = value;
      return { messages: copy };
    }),
  );

/** A body as text: valid, mutated, random JSON, or the text of one cut short or with a byte changed. */
const body = fc.oneof(
  fc.array(message, { minLength: 1, maxLength: 4 }).map((messages) => JSON.stringify({ messages })),
  mutatedBatch.map((b) => JSON.stringify(b)),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 200 }),
  fc
    .tuple(fc.array(message, { minLength: 1, maxLength: 2 }), fc.nat(), fc.integer({ min: 0, max: 255 }))
    .map(([messages, at, code]) => {
      const text = JSON.stringify({ messages });
      const i = at % text.length;
      return code % 2 === 0
        ? text.slice(0, i)
        : text.slice(0, i) + String.fromCharCode(code) + text.slice(i + 1);
    }),
);

function isSafeCount(v: unknown): boolean {
  return v === undefined || (Number.isSafeInteger(v) && (v as number) >= 0);
}

it('answers every batch without a 5xx and hands on only messages the schema accepts', async () => {
  await fc.assert(
    fc.asyncProperty(body, async (text) => {
      delivered.length = 0;
      const res = await app.request(`http://127.0.0.1${RAFT_MESSAGES_PATH}`, {
        method: 'POST',
        headers: { [CLUSTER_SECRET_HEADER]: SECRET, 'content-type': 'application/json' },
        body: text,
      });
      expect(res.status).toBeLessThan(500);
      if (res.status >= 400) expect(delivered).toEqual([]);
      for (const m of delivered) {
        expect(messageSchema.safeParse(m).success).toBe(true);
        for (const k of ['term', 'logTerm', 'index', 'commit', 'rejectHint'] as const) {
          expect(isSafeCount(m[k])).toBe(true);
        }
        for (const e of m.entries ?? []) expect(isSafeCount(e.term) && isSafeCount(e.index)).toBe(true);
      }
    }),
    { numRuns: 400 },
  );
  // The generators reach the node too, not only the refusals.
  expect(deliveredInAll).toBeGreaterThan(0);
});

it('the batch schema never throws, whatever value it is given', () => {
  fc.assert(
    fc.property(fc.oneof(fc.anything(), mutatedBatch), (value) => {
      const parsed = messageBatchSchema.safeParse(value);
      if (parsed.success) for (const m of parsed.data.messages) expect(messageSchema.parse(m)).toEqual(m);
    }),
    { numRuns: 1_000 },
  );
});
