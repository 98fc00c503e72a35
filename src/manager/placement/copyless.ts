// Objects no copy can be made of, as this leader found them: `unavailable` (no serving worker holds
// a copy: the workers the record names are down, or those up lack it while another is down; their
// bytes may come back) and `lost` (every worker the record names is serving and answered that it
// holds no copy, or only other bytes). Leader-local, like the object slots: a new leader finds the
// same objects again from the tables and the workers, and nothing here is committed, so a verdict
// never destroys anything and a copy that comes back undoes it.
//
// A verdict holds for the record and the serving workers it was made on (its `seen` key): once
// either changes (a copy re-adopted, a worker back), the object is planned again. Repair skips an
// object with a verdict that holds, so a lost object costs no copy attempt, and no log line, per
// pass; the gauges count every object with a verdict, not only those one pass examined.

import type { ObjectView } from '../../metadata/commands.ts';
import type { Replicas } from './plan.ts';

export type Copyless = 'unavailable' | 'lost';

/** A bound on memory, not a goal: objects past it are still repaired, only not counted. */
const MAX_TRACKED = 100_000;

interface Verdict {
  kind: Copyless;
  seen: string;
  /** When the copies were last asked (lost only): see `dueForCheck`. */
  checkedAt: number;
}

/** What a verdict was made on: the record's identity and copies, and which of them were serving. */
export function seenKey(object: ObjectView, r: Pick<Replicas, 'sources'>): string {
  const serving = r.sources.map((n) => n.nodeId).sort();
  return `${object.sha256}/${object.createdAt}/${[...object.replicas].sort().join(',')}/${serving.join(',')}`;
}

export class CopylessObjects {
  private readonly verdicts = new Map<string, Verdict>();
  /** Where `page` resumes. */
  private cursor: string | undefined;
  /** Objects whose lost verdict went stale (a copy came back): their other recorded copies are suspect. */
  private readonly cameBack = new Set<string>();

  /** The verdict on `object`, if it still holds for what is seen now; a stale one is dropped. */
  holds(object: ObjectView, r: Pick<Replicas, 'sources'>): Copyless | null {
    const v = this.verdicts.get(object.id);
    if (!v) return null;
    if (v.seen === seenKey(object, r)) return v.kind;
    this.verdicts.delete(object.id);
    if (v.kind === 'lost') this.cameBack.add(object.id);
    return null;
  }

  /**
   * Notes what a pass saw of `object`: with no serving copy at all it is unavailable; otherwise a
   * verdict made on something else is dropped. True when the object needs no planning.
   */
  observe(object: ObjectView, r: Pick<Replicas, 'sources'>): boolean {
    if (r.sources.length === 0) {
      this.set(object, r, 'unavailable', 0);
      return true;
    }
    return this.holds(object, r) !== null;
  }

  /** Records a verdict; true when it is new (not the same kind already). */
  set(object: ObjectView, r: Pick<Replicas, 'sources'>, kind: Copyless, now: number): boolean {
    const was = this.verdicts.get(object.id);
    if (!was && this.verdicts.size >= MAX_TRACKED) return false;
    this.verdicts.set(object.id, { kind, seen: seenKey(object, r), checkedAt: now });
    return was?.kind !== kind;
  }

  forget(id: string): void {
    this.verdicts.delete(id);
  }

  /**
   * The objects found lost whose record changed since (a copy re-adopted, most often), once each:
   * the record still names the copies found missing, which a read-back proves gone.
   */
  takeCameBack(): string[] {
    const ids = [...this.cameBack];
    this.cameBack.clear();
    return ids;
  }

  clear(): void {
    this.verdicts.clear();
    this.cameBack.clear();
  }

  count(kind: Copyless): number {
    let n = 0;
    for (const v of this.verdicts.values()) if (v.kind === kind) n += 1;
    return n;
  }

  /**
   * Up to `limit` tracked ids, resuming after the last id handed out, so a pass re-reads a page of
   * them and every verdict is checked against the tables within a few passes.
   */
  page(limit: number): string[] {
    if (this.verdicts.size <= limit) return [...this.verdicts.keys()];
    const ids = [...this.verdicts.keys()].sort();
    const start = this.cursor === undefined ? 0 : ids.findIndex((id) => id > this.cursor!);
    const from = Math.max(start, 0);
    const page = ids.slice(from, from + limit);
    this.cursor = from + limit >= ids.length ? undefined : page.at(-1);
    return page;
  }

  /** A lost verdict whose copies were last asked `recheckMs` ago or more: a copy may be back. */
  dueForCheck(id: string, now: number, recheckMs: number): boolean {
    const v = this.verdicts.get(id);
    return v?.kind === 'lost' && now - v.checkedAt >= recheckMs;
  }
}
