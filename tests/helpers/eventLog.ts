// A pino logger whose lines are kept in memory, so a test can count the events the nodes logged.

import { Writable } from 'node:stream';
import { pino } from 'pino';

/** The events every node logs, by name. */
export function eventLog(): { logger: pino.Logger; count: (event: string) => number } {
  const seen: string[] = [];
  const stream = new Writable({
    write(line: Buffer, _encoding, done) {
      const event = (JSON.parse(line.toString()) as { event?: string }).event;
      if (event !== undefined) seen.push(event);
      done();
    },
  });
  return { logger: pino(stream), count: (event) => seen.filter((e) => e === event).length };
}
