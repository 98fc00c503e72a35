import { afterEach, describe, expect, it } from 'vitest';
import { decodeCommand } from '../../src/metadata/commands.ts';
import { type CommandProposer, proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { EntryLog, MetadataFixture, recordCmd, registerCmd } from './metadataFixture.ts';

const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

describe('proposeCommand', () => {
  it('stamps a fresh request id and resolves with the result the state machine returned for it', async () => {
    const sm = await fx.machine();
    const log = new EntryLog();
    const seen: string[] = [];
    // A one-member log in place of the Raft driver: append, apply, hand back the result whose
    // request id matches, as src/consensus/raftNode.ts does.
    const node: CommandProposer = {
      async propose(data, requestId) {
        seen.push(requestId);
        const decoded = decodeCommand(data);
        expect(decoded.ok && decoded.command.requestId).toBe(requestId);
        const results = await sm.apply([log.raw(data)]);
        return results.find((r) => r.requestId === requestId)?.result;
      },
    };
    const registered = await proposeCommand(node, registerCmd('w1'));
    expect(registered).toMatchObject({ ok: true, created: true, node: { nodeId: 'w1' } });
    await proposeCommand(node, registerCmd('w2'));
    const created = await proposeCommand(node, {
      type: 'recordObject' as const,
      id: 'img',
      size: 5,
      sha256: 'c'.repeat(64),
      contentType: 'image/gif',
      createdAt: 1,
      replicas: ['w1', 'w2'],
    });
    expect(created).toMatchObject({ ok: true, created: true, object: { id: 'img', replicas: ['w1', 'w2'] } });
    const clash = await proposeCommand(node, recordCmd('img', ['w1', 'w2']));
    expect(clash).toEqual({ ok: false, code: 'ObjectExists', message: expect.any(String) });
    expect(new Set(seen).size).toBe(4);
    await expect(proposeCommand(node, { type: 'deleteObject', id: '../../x' })).rejects.toThrow();
    expect(seen).toHaveLength(4);
  });
});
