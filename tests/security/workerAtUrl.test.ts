// Managers find a worker's access credential by its URL: the lookup never guesses between two ids
// at one URL, where a wrong guess sends one worker's credential to another and locks it out.

import { describe, expect, it } from 'vitest';
import { workerAtUrl } from '../../src/manager/imagesMode.ts';
import type { NodeState, NodeView } from '../../src/metadata/commands.ts';

const node = (nodeId: string, url: string, state: NodeState): NodeView => ({
  nodeId,
  url,
  state,
  zone: 'z',
  stateSince: 0,
  lastSeen: 0,
  diskUsed: 0,
  diskFree: 0,
  objectCount: 0,
});

const A = 'http://127.0.0.1:7101';

describe('workerAtUrl', () => {
  it('names the one worker at a URL, and no one at an unknown URL', () => {
    expect(workerAtUrl([node('w1', A, 'up'), node('w2', 'http://127.0.0.1:7102', 'up')], A)).toBe('w1');
    expect(workerAtUrl([node('w1', A, 'up')], 'http://127.0.0.1:9')).toBeUndefined();
  });

  it('prefers the id in service over a drained or down one that held the URL before', () => {
    expect(workerAtUrl([node('old', A, 'drained'), node('new', A, 'up')], A)).toBe('new');
    expect(workerAtUrl([node('new', A, 'suspect'), node('old', A, 'down')], A)).toBe('new');
  });

  it('names no one when two ids at the URL are both in service, or both out of it', () => {
    expect(workerAtUrl([node('a', A, 'up'), node('b', A, 'up')], A)).toBeUndefined();
    expect(workerAtUrl([node('a', A, 'down'), node('b', A, 'drained')], A)).toBeUndefined();
  });
});
