// Operator routes for S3 access keys, on the main port, behind the operator credential: create (the
// leader draws the key and commits it; the answer is the only place the secret is shown), list
// (ids only), delete. A follower redirects to the leader (the CLI's cluster client follows 307).

import { randomBytes } from 'node:crypto';
import { type Context, Hono } from 'hono';
import { requireCredential } from '../../http/clusterAuth.ts';
import type { ManagerCredentials } from '../../http/credentials.ts';
import { jsonError } from '../../http/errors.ts';
import { noLeaderKnown, redirectToLeader } from '../../http/leaderRedirect.ts';
import { ACCESS_KEY_ID_PATTERN } from '../../metadata/commands.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../metadata/proposeCommand.ts';
import { S3_KEYS_PATH } from '../../protocol/s3KeyPaths.ts';
import { ImageError, type RaftAccess, raftFailure } from '../imageService.ts';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export interface S3KeyRouteDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  credentials: ManagerCredentials;
  /** This manager's S3 endpoint, or null when it runs none. */
  endpoint: string | null;
}

/** `IV` + 18 characters of base32: the shape of AWS's access key ids. */
function newAccessKeyId(): string {
  return `IV${[...randomBytes(18)].map((b) => ALPHABET[b % 32]).join('')}`;
}

function leaderOnly(c: Context, raft: RaftAccess): Response | null {
  if (raft.isLeader()) return null;
  const leader = raft.leaderInfo();
  if (leader?.url) return redirectToLeader(c, leader.url, 'this manager is not the leader');
  return noLeaderKnown(c, 'no leader is known right now; retry shortly');
}

export function s3KeyRoutes(deps: S3KeyRouteDeps): Hono {
  const app = new Hono();
  app.use(`${S3_KEYS_PATH}`, requireCredential(deps.credentials, ['operator']));
  app.use(`${S3_KEYS_PATH}/*`, requireCredential(deps.credentials, ['operator']));
  app.onError((err, c) => {
    if (err instanceof ImageError) return jsonError(c, 503, err.code, err.message);
    throw err;
  });

  app.post(S3_KEYS_PATH, async (c) => {
    const redirect = leaderOnly(c, deps.raft);
    if (redirect) return redirect;
    const accessKeyId = newAccessKeyId();
    const secretAccessKey = randomBytes(30).toString('base64');
    const result = await proposeCommand(deps.raft, {
      type: 'putS3Key',
      accessKeyId,
      secretAccessKey,
      at: Date.now(),
    }).catch(raftFailure);
    if (!result.ok) return jsonError(c, 409, result.code, result.message);
    return c.json({ accessKeyId, secretAccessKey, endpoint: deps.endpoint }, 201);
  });

  app.get(S3_KEYS_PATH, async (c) => {
    await deps.raft.readIndex().catch(raftFailure);
    const keys = await deps.metadata.listS3Keys();
    return c.json({
      keys: keys.map((k) => ({ accessKeyId: k.accessKeyId, createdAt: new Date(k.createdAt).toISOString() })),
      endpoint: deps.endpoint,
    });
  });

  app.delete(`${S3_KEYS_PATH}/:id`, async (c) => {
    const accessKeyId = c.req.param('id');
    if (!ACCESS_KEY_ID_PATTERN.test(accessKeyId))
      return jsonError(c, 400, 'InvalidKey', 'not an access key id');
    const redirect = leaderOnly(c, deps.raft);
    if (redirect) return redirect;
    const result = await proposeCommand(deps.raft, { type: 'deleteS3Key', accessKeyId }).catch(raftFailure);
    if (!result.ok) return jsonError(c, 404, result.code, result.message);
    return c.body(null, 204);
  });
  return app;
}
