import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Command, type CommandOf, keyProblem, parseCommand } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import {
  applyOne,
  EntryLog,
  MetadataFixture,
  recordCmd,
  registerCmd,
  SHA_A,
  SHA_B,
} from './metadataFixture.ts';

const fx = new MetadataFixture();
let sm: MetadataStateMachine;
let log: EntryLog;

beforeEach(async () => {
  sm = await fx.machine();
  log = new EntryLog();
});
afterEach(() => fx.cleanup());

async function setup(...commands: Command[]): Promise<void> {
  for (const c of commands) await applyOne(sm, log, c);
}

function putCmd(key: string, sha256: string, objectId?: string, mtime = 5000): CommandOf<'putName'> {
  return {
    type: 'putName',
    bucket: 'photos',
    key,
    sha256,
    ...(objectId ? { objectId } : {}),
    mtime,
    at: 6000,
  };
}

async function withContent(): Promise<void> {
  await setup(registerCmd('w1'), registerCmd('w2'), recordCmd('o1', ['w1', 'w2'], 100, SHA_A));
}

describe('key validation', () => {
  it('accepts paths and refuses what could escape or confuse a restore', () => {
    expect(keyProblem('2024/italy/IMG_0042.HEIC')).toBeNull();
    expect(keyProblem('été/日本/ phöto (1).jpg')).toBeNull();
    for (const bad of [
      '',
      '/abs',
      'a//b',
      'a/',
      'a/../b',
      '..',
      './a',
      'a\\b',
      'a\u0000b',
      'a\nb',
      '\ud800x',
    ]) {
      expect(keyProblem(bad), JSON.stringify(bad)).not.toBeNull();
    }
    expect(keyProblem('x'.repeat(1024))).toBeNull();
    expect(keyProblem('é'.repeat(513))).toMatch(/1024/);
  });

  it('the command schema refuses a bad bucket or key', () => {
    expect(parseCommand({ ...putCmd('a/../b', SHA_A, 'o1') }).ok).toBe(false);
    expect(parseCommand({ ...putCmd('a.jpg', SHA_A, 'o1'), bucket: 'No_Caps' }).ok).toBe(false);
    expect(parseCommand(putCmd('a.jpg', SHA_A, 'o1')).ok).toBe(true);
  });
});

describe('putName and deleteName', () => {
  it('names stored content, and a second name of the same bytes points at the same object', async () => {
    await withContent();
    const first = await applyOne(sm, log, putCmd('2024/a.png', SHA_A, 'o1'));
    expect(first).toMatchObject({
      ok: true,
      created: true,
      deduplicated: false,
      released: null,
      unused: null,
    });
    await setup(recordCmd('o2', ['w1', 'w2'], 100, SHA_A));
    const second = await applyOne(sm, log, putCmd('2024/copy.png', SHA_A, 'o2'));
    expect(second).toMatchObject({ ok: true, deduplicated: true, unused: 'o2', name: { objectId: 'o1' } });
    const byHash = await applyOne(sm, log, putCmd('third.png', SHA_A));
    expect(byHash).toMatchObject({ ok: true, deduplicated: true, unused: null, name: { objectId: 'o1' } });
    expect(await sm.getName('photos', '2024/copy.png')).toEqual({
      bucket: 'photos',
      key: '2024/copy.png',
      objectId: 'o1',
      size: 100,
      sha256: SHA_A,
      contentType: 'image/png',
      mtime: 5000,
      updatedAt: 6000,
    });
    expect(await sm.contentObject(SHA_A)).toBe('o1');
    expect(await sm.nameStats()).toEqual({
      names: { objects: 3, bytes: 300 },
      content: { objects: 1, bytes: 100 },
    });
  });

  it('refuses a name for content that is not stored, or an object with other bytes', async () => {
    await withContent();
    expect(await applyOne(sm, log, putCmd('a.png', SHA_B))).toMatchObject({
      ok: false,
      code: 'ContentNotFound',
    });
    expect(await applyOne(sm, log, putCmd('a.png', SHA_B, 'nope'))).toMatchObject({
      code: 'ContentNotFound',
    });
    expect(await applyOne(sm, log, putCmd('a.png', SHA_B, 'o1'))).toMatchObject({ code: 'ObjectChanged' });
    expect(await sm.getName('photos', 'a.png')).toBeNull();
  });

  it('frees content with its last name, and a named object cannot be deleted under it', async () => {
    await withContent();
    await setup(putCmd('a.png', SHA_A, 'o1'), putCmd('b.png', SHA_A));
    expect(await applyOne(sm, log, { type: 'deleteObject', id: 'o1' })).toMatchObject({
      ok: false,
      code: 'ObjectReferenced',
    });
    expect(await applyOne(sm, log, { type: 'deleteName', bucket: 'photos', key: 'a.png' })).toMatchObject({
      ok: true,
      released: null,
    });
    expect(await applyOne(sm, log, { type: 'deleteName', bucket: 'photos', key: 'b.png' })).toMatchObject({
      ok: true,
      released: 'o1',
    });
    expect(await sm.contentObject(SHA_A)).toBeNull();
    expect(await applyOne(sm, log, { type: 'deleteName', bucket: 'photos', key: 'b.png' })).toMatchObject({
      code: 'NameNotFound',
    });
    expect(await applyOne(sm, log, { type: 'deleteObject', id: 'o1' })).toMatchObject({ ok: true });
    expect(await sm.nameStats()).toEqual({
      names: { objects: 0, bytes: 0 },
      content: { objects: 0, bytes: 0 },
    });
  });

  it('repointing a name to other content releases the old content', async () => {
    await withContent();
    await setup(recordCmd('o2', ['w1', 'w2'], 50, SHA_B), putCmd('a.png', SHA_A, 'o1'));
    const changed = await applyOne(sm, log, putCmd('a.png', SHA_B, 'o2', 7000));
    expect(changed).toMatchObject({
      ok: true,
      created: false,
      released: 'o1',
      name: { objectId: 'o2', mtime: 7000 },
    });
    expect(await sm.nameStats()).toEqual({
      names: { objects: 1, bytes: 50 },
      content: { objects: 1, bytes: 50 },
    });
    const touched = await applyOne(sm, log, putCmd('a.png', SHA_B, undefined, 8000));
    expect(touched).toMatchObject({ ok: true, released: null, name: { mtime: 8000 } });
  });

  it('snapshots carry the name tables, and replicas agree byte for byte', async () => {
    await withContent();
    await setup(putCmd('a.png', SHA_A, 'o1'), putCmd('b/c.png', SHA_A));
    const copy = await fx.machine();
    await copy.restore(await sm.snapshot(), sm.appliedIndex());
    expect(await copy.tableDigest()).toEqual(await sm.tableDigest());
    expect(await copy.getName('photos', 'b/c.png')).toMatchObject({ objectId: 'o1' });
    const replayed = await fx.machine();
    await replayed.apply(log.entries);
    expect((await replayed.tableDigest()).sha256).toBe((await sm.tableDigest()).sha256);
  });

  it('restores keys in LevelDB byte order, where an emoji sorts after a fullwidth character', async () => {
    // UTF-16 puts the emoji (a surrogate pair, 0xD83D...) before U+FF08; UTF-8 puts it after.
    await withContent();
    await setup(putCmd('photos/\u{FF08}1\u{FF09}.jpg', SHA_A, 'o1'), putCmd('photos/\u{1F600}.jpg', SHA_A));
    const copy = await fx.machine();
    await copy.restore(await sm.snapshot(), sm.appliedIndex());
    expect(await copy.tableDigest()).toEqual(await sm.tableDigest());
    expect(await copy.getName('photos', 'photos/\u{1F600}.jpg')).toMatchObject({ objectId: 'o1' });
  });
});

describe('listNames', () => {
  const keys = [
    '2023/a.jpg',
    '2024/italy/IMG_1.jpg',
    '2024/italy/IMG_2.jpg',
    '2024/italy/sub/x.jpg',
    '2024/paris/p.jpg',
    '2024/top.jpg',
    'z.jpg',
    'é/ü.jpg',
  ];

  beforeEach(async () => {
    await withContent();
    for (const key of keys) await applyOne(sm, log, putCmd(key, SHA_A, 'o1'));
    await applyOne(sm, log, { ...putCmd('other.jpg', SHA_A), bucket: 'another' });
  });

  it('lists a bucket in key order, paged by cursor', async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10; page++) {
      const got = await sm.listNames('photos', { limit: 3, ...(cursor ? { cursor } : {}) });
      seen.push(...got.names.map((n) => n.key));
      if (got.next === null) break;
      cursor = got.next;
    }
    expect(seen).toEqual(keys);
  });

  it('groups by delimiter into common prefixes, under a prefix, across pages', async () => {
    const top = await sm.listNames('photos', { delimiter: '/' });
    expect(top.names.map((n) => n.key)).toEqual(['z.jpg']);
    expect(top.commonPrefixes).toEqual(['2023/', '2024/', 'é/']);
    const in2024 = await sm.listNames('photos', { prefix: '2024/', delimiter: '/' });
    expect(in2024.names.map((n) => n.key)).toEqual(['2024/top.jpg']);
    expect(in2024.commonPrefixes).toEqual(['2024/italy/', '2024/paris/']);
    const first = await sm.listNames('photos', { prefix: '2024/', delimiter: '/', limit: 1 });
    expect(first.commonPrefixes).toEqual(['2024/italy/']);
    const rest = await sm.listNames('photos', { prefix: '2024/', delimiter: '/', cursor: first.next! });
    expect(rest.commonPrefixes).toEqual(['2024/paris/']);
    expect(rest.names.map((n) => n.key)).toEqual(['2024/top.jpg']);
    expect(rest.next).toBeNull();
    const italy = await sm.listNames('photos', { prefix: '2024/italy/IMG' });
    expect(italy.names.map((n) => n.key)).toEqual(['2024/italy/IMG_1.jpg', '2024/italy/IMG_2.jpg']);
  });

  it('refuses a malformed cursor or delimiter', async () => {
    await expect(sm.listNames('photos', { cursor: '!!' })).rejects.toThrow(RangeError);
    await expect(sm.listNames('photos', { delimiter: '' })).rejects.toThrow(RangeError);
    expect((await sm.listNames('nobucket')).names).toEqual([]);
  });
});
