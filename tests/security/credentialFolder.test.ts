// `imgvault credentials init` on real folders: it makes private only the folders it creates, and a
// manager never starts from a key file others can read, a short key, or a lost key silently
// replaced by a new one (which would leave every credential it minted refused with a bare 401).

import { chmod, mkdir, mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MANAGER_KEY_FILES, managerDir, readManagerKeys } from '../../src/http/credentialFiles.ts';
import { runCli } from '../integration/imageCluster.ts';

let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-credfolder-'));
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const modeOf = async (path: string) => (await stat(path)).mode & 0o777;
const init = (dir: string) => runCli(['credentials', 'init', '--dir', dir, '--workers', 'w1'], 60_000);

describe('credentials init', () => {
  it("keeps an existing folder's mode and creates its own folders 0700", async () => {
    const given = join(root, 'given');
    await mkdir(given);
    await chmod(given, 0o755);
    const done = await init(given);
    expect(done.code, done.stderr).toBe(0);
    expect(await modeOf(given)).toBe(0o755);
    for (const sub of ['manager', 'worker-w1', 'operator'])
      expect(await modeOf(join(given, sub))).toBe(0o700);
    expect(await modeOf(join(given, 'manager', MANAGER_KEY_FILES.raft))).toBe(0o600);
  });

  it('refuses to replace a lost manager key, and names the file to restore', async () => {
    expect((await init(root)).code).toBe(0);
    await unlink(join(managerDir(root), MANAGER_KEY_FILES.access));
    const again = await init(root);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain(MANAGER_KEY_FILES.access);
    expect(again.stderr).toContain('restore');
    await expect(stat(join(managerDir(root), MANAGER_KEY_FILES.access))).rejects.toThrow();
  });
});

describe('reading the manager keys', () => {
  it('refuses a key file others can read, and a short key, with the file and the remedy named', async () => {
    expect((await init(root)).code).toBe(0);
    const dir = managerDir(root);
    expect(Object.keys(readManagerKeys(dir)).sort()).toEqual(['access', 'operator', 'raft', 'workers']);
    const raft = join(dir, MANAGER_KEY_FILES.raft);
    await chmod(raft, 0o644);
    expect(() => readManagerKeys(dir)).toThrow(`chmod 600 ${raft}`);
    await chmod(raft, 0o600);
    const kept = await readFile(raft, 'utf8');
    await writeFile(raft, 'short-key\n');
    expect(() => readManagerKeys(dir)).toThrow(/9 characters, under 32/);
    await writeFile(raft, kept);
    expect(readManagerKeys(dir).raft).toBe(kept.trim());
  });
});
