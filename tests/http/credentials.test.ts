// The credential format: a role's key proves ids of that role only, a changed byte proves nothing,
// and the single cluster secret stands for every role while naming no one.

import { describe, expect, it } from 'vitest';
import {
  copyCredential,
  ManagerCredentials,
  mintCredential,
  parseCredential,
  verifyCredential,
} from '../../src/http/credentials.ts';

const keys = { raft: 'raft-key', workers: 'workers-key', access: 'access-key', operator: 'operator-key' };
const perRole = ManagerCredentials.perRole(keys);

describe('credentials', () => {
  it('prove their own role and id, with dotted ids too', () => {
    const w = mintCredential(keys.workers, 'worker', 'rack1.w7');
    expect(parseCredential(w)).toEqual({ role: 'worker', id: 'rack1.w7' });
    expect(perRole.authenticate(w, ['worker'])).toEqual({ role: 'worker', id: 'rack1.w7' });
    expect(perRole.authenticate(w, ['raft', 'operator'])).toBeNull();
    expect(verifyCredential(keys.raft, 'worker', w)).toBeNull();
  });

  it('prove nothing once changed, renamed or cut', () => {
    const r = perRole.raftCredential('m1', 'm2');
    const flipped = `${r.slice(0, -1)}${r.endsWith('A') ? 'B' : 'A'}`;
    expect(perRole.authenticate(flipped, ['raft'])).toBeNull();
    expect(perRole.authenticate(r.replace('.m1:', '.m3:'), ['raft'])).toBeNull();
    expect(perRole.authenticate(r.slice(0, 10), ['raft'])).toBeNull();
    expect(perRole.authenticate(undefined, ['raft'])).toBeNull();
    expect(perRole.authenticate('', ['raft'])).toBeNull();
  });

  it('derive a copy credential a worker can check from its access credential alone', () => {
    const access = perRole.accessCredential('w1');
    expect(perRole.copyCredential('w1')).toBe(copyCredential(access));
    expect(perRole.copyCredential('w1')).not.toBe(perRole.copyCredential('w2'));
    expect(() => copyCredential(perRole.raftCredential('m1', 'm2'))).toThrow(/not an access credential/);
  });

  it('take the single secret as every role, naming no one, and send it as is', () => {
    const single = ManagerCredentials.singleSecret('one-secret-for-everything');
    expect(single.authenticate('one-secret-for-everything', ['operator'])).toEqual({ role: 'any', id: null });
    expect(single.raftCredential('m1', 'm2')).toBe('one-secret-for-everything');
    expect(single.accessCredential('w1')).toBe('one-secret-for-everything');
    expect(perRole.authenticate('one-secret-for-everything', ['operator'])).toBeNull();
  });
});
