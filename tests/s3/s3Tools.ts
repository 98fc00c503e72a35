// The real S3 clients from Debian (aws-cli 2, rclone, s3cmd), each with a config of its own in a
// temp folder: never the user's ~/.aws, ~/.config/rclone or ~/.s3cfg.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const AWS = '/usr/bin/aws';
export const RCLONE = '/usr/bin/rclone';
export const S3CMD = '/usr/bin/s3cmd';
export const CONVERT = ['/usr/local/bin/convert', '/usr/bin/convert'].find((p) => existsSync(p));

export interface S3Key {
  accessKeyId: string;
  secretAccessKey: string;
}

/** Why `tool` cannot run here, or null. */
export function missing(...tools: (string | undefined)[]): string | null {
  for (const t of tools)
    if (t === undefined || !existsSync(t)) return `${t ?? 'ImageMagick convert'} is not installed`;
  return null;
}

export function run(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 180_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A minimal environment: PATH and HOME (a temp folder), nothing of the user's credentials. */
function baseEnv(home: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LANG: 'C.UTF-8' };
}

export async function awsEnv(dir: string, key: S3Key): Promise<NodeJS.ProcessEnv> {
  const config = join(dir, 'aws-config');
  await writeFile(config, '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n');
  return {
    ...baseEnv(dir),
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'aws-credentials-none'),
    AWS_ACCESS_KEY_ID: key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: key.secretAccessKey,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_PAGER: '',
  };
}

/** rclone's remote `iv:` from the environment alone. */
export async function rcloneEnv(dir: string, key: S3Key, endpoint: string): Promise<NodeJS.ProcessEnv> {
  const config = join(dir, 'rclone.conf');
  await writeFile(config, '');
  return {
    ...baseEnv(dir),
    RCLONE_CONFIG: config,
    RCLONE_CONFIG_IV_TYPE: 's3',
    RCLONE_CONFIG_IV_PROVIDER: 'Other',
    RCLONE_CONFIG_IV_ACCESS_KEY_ID: key.accessKeyId,
    RCLONE_CONFIG_IV_SECRET_ACCESS_KEY: key.secretAccessKey,
    RCLONE_CONFIG_IV_ENDPOINT: endpoint,
    RCLONE_CONFIG_IV_FORCE_PATH_STYLE: 'true',
  };
}

export async function s3cmdConfig(dir: string, key: S3Key, endpoint: string): Promise<string> {
  const host = new URL(endpoint).host;
  const file = join(dir, 's3cmd.cfg');
  await writeFile(
    file,
    `[default]\naccess_key = ${key.accessKeyId}\nsecret_key = ${key.secretAccessKey}\n` +
      `host_base = ${host}\nhost_bucket = ${host}\nuse_https = False\nsignature_v2 = False\n`,
  );
  return file;
}
