// Peer messages refused before the core (transport/messageFilter.ts) are counted every time but
// logged at most once per sender and reason every REFUSAL_LOG_MS: a removed member keeps sending,
// and its every heartbeat must not become a log line.

import type { Logger } from '../../logging.ts';
import type { Refusal } from '../transport/messageFilter.ts';
import type { Message, Term } from '../types.ts';
import type { RaftClock } from './clock.ts';

const REFUSAL_LOG_MS = 10_000;
/** Bound on the remembered (reason, sender) pairs; forgetting them only logs one more line each. */
const MAX_REMEMBERED = 1_000;

export class RefusalLog {
  /** When a refused message was last logged, by reason and sender. */
  private readonly logged = new Map<string, number>();

  constructor(
    private readonly clock: RaftClock,
    private readonly log: Logger,
    private readonly onRefused?: (why: Refusal) => void,
  ) {}

  note(msg: Message, why: Refusal, term: Term): void {
    this.onRefused?.(why);
    const key = `${why} ${msg.from}`;
    const now = this.clock.now();
    const last = this.logged.get(key);
    if (last !== undefined && now - last < REFUSAL_LOG_MS) return;
    if (this.logged.size > MAX_REMEMBERED) this.logged.clear();
    this.logged.set(key, now);
    this.log.warn(
      { event: 'raft.message_refused', reason: why, type: msg.type, from: msg.from, msgTerm: msg.term, term },
      `refused a raft ${msg.type} from ${msg.from}: ${why}`,
    );
  }
}
