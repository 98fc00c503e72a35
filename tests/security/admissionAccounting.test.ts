// The admission ledger on its own: every slot and byte taken is given back exactly once, whatever
// order uploads end in, so a cap never leaks shut. Random admit/release sequences are checked
// against a plain model of the same ledger.

import fc from 'fast-check';
import { expect, it } from 'vitest';
import { UploadAdmission } from '../../src/manager/uploadAdmission.ts';

const limits = { maxUploads: 5, maxUploadsPerClient: 3, maxStagedBytes: 1_000, maxStagedBytesPerClient: 600 };

it('admits exactly what the caps allow and gives everything back on release', () => {
  const op = fc.oneof(
    fc.record({
      kind: fc.constant('admit' as const),
      client: fc.constantFrom('a', 'b', 'c'),
      bytes: fc.nat(400),
    }),
    fc.record({ kind: fc.constant('release' as const), at: fc.nat(), twice: fc.boolean() }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const admission = new UploadAdmission(limits);
      const held: { client: string; bytes: number; release: () => void }[] = [];
      for (const o of ops) {
        if (o.kind === 'admit') {
          const mine = held.filter((h) => h.client === o.client);
          const sum = (hs: typeof held) => hs.reduce((n, h) => n + h.bytes, 0);
          const fits =
            mine.length < limits.maxUploadsPerClient &&
            held.length < limits.maxUploads &&
            sum(mine) + o.bytes <= limits.maxStagedBytesPerClient &&
            sum(held) + o.bytes <= limits.maxStagedBytes;
          const admitted = admission.admit(o.client, o.bytes);
          expect(admitted.ok).toBe(fits);
          if (admitted.ok) held.push({ client: o.client, bytes: o.bytes, release: admitted.release });
        } else if (held.length > 0) {
          const [h] = held.splice(o.at % held.length, 1);
          h!.release();
          if (o.twice) h!.release();
        }
        expect(admission.usage()).toEqual({
          uploads: held.length,
          bytes: held.reduce((n, h) => n + h.bytes, 0),
        });
      }
      for (const h of held.splice(0)) h.release();
      expect(admission.usage()).toEqual({ uploads: 0, bytes: 0 });
    }),
    { numRuns: 300 },
  );
});

it('names the cap and the flag that sets it in a refusal', () => {
  const admission = new UploadAdmission(limits);
  admission.admit('a', 600);
  const refused = admission.admit('a', 1);
  expect(refused.ok).toBe(false);
  if (!refused.ok) {
    expect(refused.refusal.code).toBe('StagingFull');
    expect(refused.refusal.message).toContain('maxStagedBytesPerClient = 600');
    expect(refused.refusal.message).toContain('--max-staged-bytes-per-client');
  }
});
