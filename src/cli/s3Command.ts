// `imgvault s3 keys create|list|delete`: S3 access keys, an operator action (the operator credential). The
// secret access key is printed once, at creation; the cluster keeps it in its replicated tables
// (docs/s3.md says what that means).

import { Command } from 'commander';
import { S3_KEYS_PATH } from '../protocol/s3KeyPaths.ts';
import {
  ClusterClient,
  DEFAULT_RETRY,
  managerUrls,
  runOperatorAction,
  secretHeaders,
  withOperatorOptions,
} from './clusterClient.ts';

interface Flags {
  url?: string;
  secretFile?: string;
  json?: boolean;
}

function withOptions(cmd: Command): Command {
  return withOperatorOptions(cmd).option('--json', 'print one JSON object');
}

function clientOf(command: Command): { client: ClusterClient; flags: Flags } {
  const flags = command.optsWithGlobals<Flags>();
  return {
    client: new ClusterClient(managerUrls(flags.url), secretHeaders(flags.secretFile), DEFAULT_RETRY),
    flags,
  };
}

export function createS3Command(): Command {
  const s3 = new Command('s3').description(
    'the S3-compatible endpoint: access keys (operator credential required)',
  );
  const keys = s3.command('keys').description('S3 access keys');
  withOptions(
    keys.command('create').description('create an access key; prints its id, secret and the endpoint'),
  ).action(
    runOperatorAction('s3 keys create', async (_flags: unknown, command: Command) => {
      const { client, flags } = clientOf(command);
      // A retry after a lost answer can leave an unused key behind: `s3 keys list` shows it.
      const { res } = await client.request('POST', S3_KEYS_PATH, { expect: [201] });
      const key = (await res.body.json()) as {
        accessKeyId: string;
        secretAccessKey: string;
        endpoint: string | null;
      };
      if (flags.json) {
        console.log(JSON.stringify(key));
        return;
      }
      console.log(`accessKeyId:     ${key.accessKeyId}`);
      console.log(`secretAccessKey: ${key.secretAccessKey}`);
      console.log(
        `endpoint:        ${key.endpoint ?? '(this manager runs no S3 endpoint: start it with --s3-port)'}`,
      );
      console.log('the secret is shown only now: keep it');
    }),
  );
  withOptions(keys.command('list').description('list access key ids (never the secrets)')).action(
    runOperatorAction('s3 keys list', async (_flags: unknown, command: Command) => {
      const { client, flags } = clientOf(command);
      const { res } = await client.request('GET', S3_KEYS_PATH, { expect: [200] });
      const body = (await res.body.json()) as { keys: { accessKeyId: string; createdAt: string }[] };
      if (flags.json) console.log(JSON.stringify(body));
      else for (const k of body.keys) console.log(`${k.accessKeyId}\t${k.createdAt}`);
    }),
  );
  withOptions(keys.command('delete').description('delete an access key').argument('<accessKeyId>')).action(
    runOperatorAction('s3 keys delete', async (id: string, _flags: unknown, command: Command) => {
      const { client } = clientOf(command);
      const { res } = await client.request('DELETE', `${S3_KEYS_PATH}/${encodeURIComponent(id)}`, {
        expect: [204, 404],
      });
      await res.body.dump();
      console.log(res.statusCode === 204 ? `deleted ${id}` : `${id} does not exist`);
    }),
  );
  return s3;
}
