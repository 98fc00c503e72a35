// Answers read off a raw socket that sent several requests at once (HTTP/1.1 pipelining), for tests
// that hold answers back by not reading: a client library would read them as they come.

import type { Socket } from 'node:net';

/** The bodies of `count` answers read from `socket` back to back (each framed by content-length). */
export async function pipelinedBodies(
  socket: Socket,
  count: number,
): Promise<{ status: number; body: Buffer }[]> {
  let pending = Buffer.alloc(0);
  const answers: { status: number; body: Buffer }[] = [];
  for await (const chunk of socket) {
    pending = Buffer.concat([pending, chunk as Buffer]);
    for (;;) {
      const headEnd = pending.indexOf('\r\n\r\n');
      if (headEnd < 0) break;
      const head = pending.subarray(0, headEnd).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (pending.length < headEnd + 4 + length) break;
      answers.push({
        status: Number(head.split(' ')[1]),
        body: pending.subarray(headEnd + 4, headEnd + 4 + length),
      });
      pending = pending.subarray(headEnd + 4 + length);
    }
    if (answers.length === count) break;
  }
  return answers;
}
