import { describe, expect, it } from 'vitest';
import {
  type Command,
  decodeCommand,
  encodeCommand,
  MAX_HEARTBEAT_NODES,
  parseCommand,
} from '../../src/metadata/commands.ts';
import { recordCmd, registerCmd, SHA_A } from './metadataFixture.ts';

const valid: Command[] = [
  registerCmd('w1'),
  { type: 'updateWorker', nodeId: 'w1', url: 'https://w1.example:8443/blobs' },
  { type: 'updateWorker', nodeId: 'w1', zone: 'z2', requestId: 'req-1' },
  {
    type: 'heartbeatSummary',
    nodes: [{ nodeId: 'w1', diskUsed: 10, diskFree: 90, objectCount: 1, lastSeen: 5 }],
  },
  recordCmd('img-1.png', ['w1', 'w2']),
  { type: 'deleteObject', id: 'img-1.png' },
  { type: 'addReplica', id: 'img-1.png', nodeId: 'w3' },
  { type: 'removeReplica', id: 'img-1.png', nodeId: 'w3' },
  { type: 'replaceReplica', id: 'img-1.png', add: 'w3', remove: 'w1' },
  {
    type: 'replaceReplica',
    id: 'img-1.png',
    add: 'w3',
    remove: 'w1',
    expected: { sha256: 'c'.repeat(64), createdAt: 9 },
  },
  { type: 'markNodeState', nodeId: 'w1', state: 'draining', at: 7 },
];

const base = recordCmd('ok', ['w1', 'w2']);
const invalid: [string, unknown][] = [
  ['unknown type', { type: 'dropTables' }],
  [
    'replica change expecting a malformed sha256',
    { type: 'addReplica', id: 'x', nodeId: 'w1', expected: { sha256: 'zz', createdAt: 1 } },
  ],
  ['not an object', 'recordObject'],
  ['object id with a slash', { ...base, id: '../etc/passwd' }],
  ['object id starting with a dot', { ...base, id: '.hidden' }],
  ['object id too long', { ...base, id: 'a'.repeat(129) }],
  ['empty object id', { ...base, id: '' }],
  ['node id with a slash', { ...base, replicas: ['w1/x', 'w2'] }],
  ['duplicate replicas', { ...base, replicas: ['w1', 'w1'] }],
  ['no replicas', { ...base, replicas: [] }],
  ['too many replicas', { ...base, replicas: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] }],
  ['upper-case sha256', { ...base, sha256: SHA_A.toUpperCase() }],
  ['short sha256', { ...base, sha256: 'abc' }],
  ['upper-case crc32c', { ...base, crc32c: 'ABCDEF01' }],
  ['crc32c as a number', { ...base, crc32c: 12345 }],
  ['negative size', { ...base, size: -1 }],
  ['fractional size', { ...base, size: 1.5 }],
  ['fractional timestamp', { ...base, createdAt: 1.5 }],
  ['bad content type', { ...base, contentType: 'image png' }],
  ['unknown key', { ...base, extra: 1 }],
  ['missing field', { type: 'recordObject', id: 'x', size: 1, sha256: SHA_A, replicas: ['w1'] }],
  ['bad url scheme', { ...registerCmd('w1'), url: 'file:///etc/passwd' }],
  ['url with a query', { ...registerCmd('w1'), url: 'http://h/?x=1' }],
  ['bad zone', { ...registerCmd('w1'), zone: 'z 1' }],
  ['updateWorker without a change', { type: 'updateWorker', nodeId: 'w1' }],
  ['replaceReplica with add = remove', { type: 'replaceReplica', id: 'x', add: 'w1', remove: 'w1' }],
  ['unknown node state', { type: 'markNodeState', nodeId: 'w1', state: 'gone', at: 1 }],
  ['empty heartbeat summary', { type: 'heartbeatSummary', nodes: [] }],
  [
    'duplicate node in a heartbeat summary',
    {
      type: 'heartbeatSummary',
      nodes: [
        { nodeId: 'w1', diskUsed: 1, diskFree: 1, objectCount: 1, lastSeen: 1 },
        { nodeId: 'w1', diskUsed: 2, diskFree: 2, objectCount: 2, lastSeen: 2 },
      ],
    },
  ],
  [
    'oversized heartbeat summary',
    {
      type: 'heartbeatSummary',
      nodes: Array.from({ length: MAX_HEARTBEAT_NODES + 1 }, (_, i) => ({
        nodeId: `w${i}`,
        diskUsed: 1,
        diskFree: 1,
        objectCount: 1,
        lastSeen: 1,
      })),
    },
  ],
  ['empty request id', { ...base, requestId: '' }],
];

describe('metadata commands', () => {
  it.each(valid.map((c) => [c.type, c] as const))('accepts a valid %s and round-trips it', (_, command) => {
    expect(parseCommand(command)).toEqual({ ok: true, command });
    expect(decodeCommand(encodeCommand(command))).toEqual({ ok: true, command });
  });

  it.each(invalid)('rejects %s', (_, input) => {
    const parsed = parseCommand(input);
    expect(parsed.ok).toBe(false);
    expect(() => encodeCommand(input as Command)).toThrow();
  });

  it('decoding never throws and keeps the request id of a rejected entry', () => {
    expect(decodeCommand('{not json')).toEqual({ ok: false, message: expect.any(String), requestId: null });
    const decoded = decodeCommand(JSON.stringify({ type: 'deleteObject', id: '/x', requestId: 'r-9' }));
    expect(decoded).toEqual({ ok: false, message: expect.stringContaining('id'), requestId: 'r-9' });
    expect(decodeCommand('null')).toMatchObject({ ok: false, requestId: null });
  });
});
