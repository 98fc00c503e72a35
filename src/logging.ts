import { type Logger, pino } from 'pino';

export type { Logger } from 'pino';

/**
 * One pino JSON logger per process. Every record carries a stable `event` field chosen by the
 * caller (e.g. `log.info({ event: 'raft.leader_elected', term }, '...')`) so operators can grep.
 * IMGVAULT_LOG_LEVEL overrides the level; tests default to `silent` unless it is set.
 */
export function createLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  const fallback = process.env.VITEST ? 'silent' : 'info';
  return pino({ level: process.env.IMGVAULT_LOG_LEVEL ?? fallback, base: { component, ...bindings } });
}
