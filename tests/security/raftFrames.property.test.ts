// Property tests over the binary Raft frames (messageCodec.ts): every message the JSON schema
// accepts, but a snapshot, comes back from its frame unchanged; and whatever bytes arrive, the
// decoder either refuses them with a FrameError or yields a message the schema accepts, never
// anything else and never another kind of exception.

import fc from 'fast-check';
import { expect, it } from 'vitest';
import {
  decodeMessage,
  encodeMessageFrame,
  FRAME_HEADER_BYTES,
  FrameError,
} from '../../src/consensus/transport/messageCodec.ts';
import { messageSchema } from '../../src/consensus/transport/messageSchema.ts';
import { MESSAGE_TYPES, type Message } from '../../src/consensus/types.ts';

const count = fc.oneof(fc.nat(), fc.constantFrom(0, 2 ** 53 - 1, 2 ** 31));
const term = fc.oneof(fc.nat(), fc.constantFrom(0, 2 ** 53 - 2));
const text = (maxLength: number) => fc.string({ maxLength, unit: 'binary' });
const nodeId = fc.oneof(
  fc.constantFrom('m1', 'm2'),
  fc.string({ minLength: 1, maxLength: 8, unit: 'binary' }),
);
const message: fc.Arbitrary<Message> = fc.record(
  {
    type: fc.constantFrom(...MESSAGE_TYPES.filter((t) => t !== 'MsgSnap')),
    from: nodeId,
    to: nodeId,
    term,
    logTerm: term,
    index: count,
    entries: fc.array(
      fc.record({ term, index: count, type: fc.constantFrom('normal', 'confChange'), data: text(60) }),
      { maxLength: 3 },
    ),
    commit: count,
    reject: fc.boolean(),
    rejectHint: count,
    context: text(20),
  },
  { requiredKeys: ['type', 'from', 'to', 'term'] },
) as fc.Arbitrary<Message>;

/** The body of a frame (what decodeMessage reads): valid, cut short, with bytes changed, or random. */
const body = fc.oneof(
  message.map((m) => encodeMessageFrame(m).subarray(FRAME_HEADER_BYTES)),
  fc.tuple(message, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()).map(([m, at, byte, cut]) => {
    const b = Buffer.from(encodeMessageFrame(m).subarray(FRAME_HEADER_BYTES));
    const i = at % b.length;
    if (cut) return b.subarray(0, i);
    b[i] = byte;
    return b;
  }),
  fc.uint8Array({ maxLength: 80 }).map((a) => Buffer.from(a)),
);

it('gives back every framed message unchanged', () => {
  fc.assert(
    fc.property(message, (m) => {
      expect(messageSchema.safeParse(m).success).toBe(true);
      const frame = encodeMessageFrame(m);
      expect(frame.readUInt32LE(0)).toBe(frame.length - 4);
      expect(decodeMessage(frame.subarray(FRAME_HEADER_BYTES))).toEqual(m);
    }),
    { numRuns: 1_000 },
  );
});

it('refuses malformed bytes with a FrameError, and what it accepts the schema accepts', () => {
  let accepted = 0;
  fc.assert(
    fc.property(body, (b) => {
      let msg: Message;
      try {
        msg = decodeMessage(b);
      } catch (err) {
        expect(err).toBeInstanceOf(FrameError);
        return;
      }
      accepted += 1;
      expect(messageSchema.parse(msg)).toEqual(msg);
    }),
    { numRuns: 3_000 },
  );
  expect(accepted).toBeGreaterThan(0);
});
