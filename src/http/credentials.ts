// A credential per role (docs/security.md, "Credentials per role"). Every credential but the Raft
// one (mintRaftCredential, which also names its receiver) is
// `<role>.<id>.<mac>`, mac = base64url(HMAC-SHA256(roleKey, "imgvault/<role>/<id>")): the holder of
// a role's key mints and checks any id's credential, the holder of one credential speaks only as
// that id. It travels in CREDENTIAL_HEADER, the header the single cluster secret always used, so a
// sender needs no change of header, only of the string it holds.

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The header every internal request carries its credential (or the single cluster secret) in. */
export const CREDENTIAL_HEADER = 'x-imgvault-cluster-secret';
/**
 * Set by a manager on a copy-batch request: the target worker's copy credential, which
 * the holder presents to the target. It opens the target's blob writes and nothing else.
 */
export const COPY_CREDENTIAL_HEADER = 'x-imgvault-copy-credential';

export type CredentialRole = 'raft' | 'worker' | 'access' | 'copy' | 'metrics' | 'operator';

/**
 * Who a request proved to be: a role and the id its credential names, or `any` for the single
 * cluster secret, which stands for every role and names no one.
 */
export type Identity = { role: CredentialRole; id: string } | { role: 'any'; id: null };

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ROLES: readonly CredentialRole[] = ['raft', 'worker', 'access', 'copy', 'metrics', 'operator'];

function mac(key: string, role: CredentialRole, id: string): string {
  return createHmac('sha256', key).update(`imgvault/${role}/${id}`).digest('base64url');
}

/** Mints `id`'s credential for `role` from the role's key. */
export function mintCredential(key: string, role: CredentialRole, id: string): string {
  if (key.length === 0) throw new Error(`the ${role} key is empty`);
  if (!ID_PATTERN.test(id)) throw new Error(`"${id}" is not a valid id (${ID_PATTERN.source})`);
  return `${role}.${id}.${mac(key, role, id)}`;
}

/**
 * A worker's copy credential, derived from its access credential: the worker holds the access
 * credential (managers present it) and so can check both; a holder sent copy credentials by a
 * manager learns nothing that opens more than the target's blob writes.
 */
export function copyCredential(accessCredential: string): string {
  const parsed = parseCredential(accessCredential);
  if (parsed?.role !== 'access') throw new Error('not an access credential');
  return mintCredential(accessCredential, 'copy', parsed.id);
}

/**
 * A Raft credential names its sender and its receiver: `raft.<from>:<to>.<mac>`, mac over
 * "imgvault/raft/<from>/<to>" (ids never hold ':' or '/'). A manager that sends to a member added
 * at a hostile URL hands over a credential only that member's id can be addressed with, never one
 * another manager takes as coming from the sender.
 */
export function mintRaftCredential(key: string, from: string, to: string): string {
  if (key.length === 0) throw new Error('the raft key is empty');
  for (const id of [from, to]) {
    if (!ID_PATTERN.test(id)) throw new Error(`"${id}" is not a valid id (${ID_PATTERN.source})`);
  }
  const raftMac = createHmac('sha256', key).update(`imgvault/raft/${from}/${to}`).digest('base64url');
  return `raft.${from}:${to}.${raftMac}`;
}

/**
 * The sender `presented` proves under `key` when addressed to `selfId` (to any receiver when
 * `selfId` is undefined), or null.
 */
export function verifyRaftCredential(
  key: string,
  presented: string,
  selfId: string | undefined,
): string | null {
  if (!presented.startsWith('raft.')) return null;
  const names = presented.slice('raft.'.length, presented.lastIndexOf('.'));
  const [from = '', to = '', ...rest] = names.split(':');
  if (rest.length > 0) return null;
  if (!ID_PATTERN.test(from) || !ID_PATTERN.test(to)) return null;
  if (selfId !== undefined && to !== selfId) return null;
  return secretsEqual(mintRaftCredential(key, from, to), presented) ? from : null;
}

/**
 * A worker's metrics credential, derived like the copy credential: it opens the worker's GET
 * /metrics and nothing else, so a scraper holding it can neither read nor delete blobs.
 */
export function metricsCredential(accessCredential: string): string {
  const parsed = parseCredential(accessCredential);
  if (parsed?.role !== 'access') throw new Error('not an access credential');
  return mintCredential(accessCredential, 'metrics', parsed.id);
}

/** Constant-time equality: both sides are hashed first, so the compare is of equal lengths. */
export function secretsEqual(expected: string, presented: string | undefined): boolean {
  if (presented === undefined || expected.length === 0) return false;
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(presented).digest();
  return timingSafeEqual(a, b);
}

export function parseCredential(text: string): { role: CredentialRole; id: string } | null {
  const first = text.indexOf('.');
  const last = text.lastIndexOf('.');
  if (first <= 0 || last <= first + 1) return null;
  const role = text.slice(0, first) as CredentialRole;
  const id = text.slice(first + 1, last);
  if (!ROLES.includes(role) || !ID_PATTERN.test(id)) return null;
  return { role, id };
}

/** The id `presented` proves for `role` under `key`, or null. */
export function verifyCredential(
  key: string,
  role: CredentialRole,
  presented: string | undefined,
): string | null {
  if (presented === undefined) return null;
  const parsed = parseCredential(presented);
  if (parsed === null || parsed.role !== role) return null;
  return secretsEqual(mintCredential(key, role, parsed.id), presented) ? parsed.id : null;
}

/** A new random key: 32 bytes, base64url (what `credentials init` and the embedded cluster write). */
export function newKey(): string {
  return randomBytes(32).toString('base64url');
}

/** The keys a manager holds: one per role it checks or mints. */
export interface RoleKeys {
  /** Managers among themselves: member m presents mintRaftCredential(raft, m, receiver). */
  raft: string;
  /** Worker w presents mintCredential(workers, 'worker', w) to managers. */
  workers: string;
  /** Managers present mintCredential(access, 'access', w) to worker w. */
  access: string;
  /** Operators present mintCredential(operator, 'operator', name). */
  operator: string;
}

/**
 * A manager's credentials: per role, or the single cluster secret (every key is the secret, and
 * the secret itself is taken as any role, so roles are not separated; kept for simple setups).
 */
export class ManagerCredentials {
  private constructor(
    readonly keys: RoleKeys,
    readonly single: string | undefined,
  ) {}

  static perRole(keys: RoleKeys): ManagerCredentials {
    for (const [role, key] of Object.entries(keys)) if (!key) throw new Error(`the ${role} key is empty`);
    return new ManagerCredentials(keys, undefined);
  }

  static singleSecret(secret: string): ManagerCredentials {
    if (!secret) throw new Error('the cluster secret must not be empty');
    return new ManagerCredentials(
      { raft: secret, workers: secret, access: secret, operator: secret },
      secret,
    );
  }

  /** What this manager, member `selfId`, presents to member `to` (and to no other). */
  raftCredential(selfId: string, to: string): string {
    return this.single ?? mintRaftCredential(this.keys.raft, selfId, to);
  }

  /** What this manager presents to worker `workerId`. */
  accessCredential(workerId: string): string {
    return this.single ?? mintCredential(this.keys.access, 'access', workerId);
  }

  /** What a holder presents to worker `workerId` when a manager asks it to copy there. */
  copyCredential(workerId: string): string {
    return this.single ?? copyCredential(this.accessCredential(workerId));
  }

  /**
   * Who `presented` proves to be, for any of `roles`; null when it proves nothing. A raft
   * credential counts only when addressed to `selfId` (the receiving manager); without `selfId`,
   * addressed to anyone.
   */
  authenticate(
    presented: string | undefined,
    roles: readonly ('raft' | 'worker' | 'operator')[],
    selfId?: string,
  ): Identity | null {
    if (presented === undefined) return null;
    if (this.single !== undefined && secretsEqual(this.single, presented)) return { role: 'any', id: null };
    for (const role of roles) {
      if (role === 'raft') {
        const from = verifyRaftCredential(this.keys.raft, presented, selfId);
        if (from !== null) return { role, id: from };
        continue;
      }
      const key = role === 'worker' ? this.keys.workers : this.keys.operator;
      const id = verifyCredential(key, role, presented);
      if (id !== null) return { role, id };
    }
    return null;
  }
}

/** The credentials an app was given: per role, else the single secret (the older option). */
export function credentialsOf(opts: {
  secret?: string;
  credentials?: ManagerCredentials;
}): ManagerCredentials {
  if (opts.credentials) return opts.credentials;
  if (opts.secret === undefined) throw new Error('a cluster secret or per-role credentials are required');
  return ManagerCredentials.singleSecret(opts.secret);
}
