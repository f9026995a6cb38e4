import { rowBytes } from './rows.js';
import type { Action, RecordChange } from './types.js';

/** Rough heap cost of one pending entry beyond its id's characters (Map slot, number). */
const ENTRY_OVERHEAD_BYTES = 48;

/**
 * The pending changes of one lens: the last action per id wins, insertion order is kept.
 * Each entry stores its latest commit time, negated for deletes, so an entry is one number.
 *
 * `firstTick` is the checkpoint tick of the oldest change still in the buffer (see Pipeline);
 * the source may not be acknowledged past it until the buffer is delivered.
 */
export class Coalescer {
  private entries = new Map<string, number>();
  /** The last row each id's change carried (stream sources), with its estimated bytes. */
  private rows = new Map<string, { row: Record<string, unknown>; bytes: number }>();
  /** Tick of the oldest change in the buffer; undefined when empty. */
  firstTick: number | undefined;
  /** When the oldest change arrived (ms, monotonic clock), for maxWaitMs. */
  firstAt = 0;
  /** Estimated bytes held. */
  bytes = 0;

  get size(): number {
    return this.entries.size;
  }

  /** Adds a change (with the row it carried, if any); returns true when the buffer was empty before. */
  add(id: string, action: Action, committedAt: number, tick: number, now: number, row?: Record<string, unknown> | null): boolean {
    const wasEmpty = this.entries.size === 0;
    const value = action === 'delete' ? -committedAt : committedAt;
    const entries = this.entries;
    const sizeBefore = entries.size;
    entries.set(id, value);
    if (entries.size > sizeBefore) this.bytes += id.length * 2 + ENTRY_OVERHEAD_BYTES;
    this.setRow(id, row ?? undefined);
    if (wasEmpty) {
      this.firstTick = tick;
      this.firstAt = now;
    }
    return wasEmpty;
  }

  private setRow(id: string, row: Record<string, unknown> | undefined): void {
    if (row === undefined && this.rows.size === 0) return; // sources that carry no rows: no cost
    this.bytes -= this.rows.get(id)?.bytes ?? 0;
    if (!row) {
      this.rows.delete(id);
      return;
    }
    const bytes = rowBytes(row);
    this.rows.set(id, { row, bytes });
    this.bytes += bytes;
  }

  /** The change of one entry, with its row (which then leaves the buffer). */
  private change(id: string, value: number): RecordChange {
    const kept = this.rows.get(id);
    const change: RecordChange = { id, action: value < 0 ? 'delete' : 'upsert', committedAt: Math.abs(value) };
    if (kept) {
      change.row = kept.row;
      this.rows.delete(id);
      this.bytes -= kept.bytes;
    }
    return change;
  }

  /**
   * Removes up to `max` entries, oldest first, and returns them as a batch. What stays keeps
   * the old `firstTick` and `firstAt` (conservative: it may hold changes as old as those).
   */
  take(max: number): { changes: RecordChange[]; firstTick: number } {
    const firstTick = this.firstTick!;
    const changes: RecordChange[] = [];
    if (this.entries.size <= max) {
      for (const [id, value] of this.entries) changes.push(this.change(id, value));
      this.entries = new Map();
      this.bytes = 0;
      this.firstTick = undefined;
    } else {
      for (const [id, value] of this.entries) {
        if (changes.length === max) break;
        changes.push(this.change(id, value));
        this.entries.delete(id);
        this.bytes -= id.length * 2 + ENTRY_OVERHEAD_BYTES;
      }
    }
    return { changes, firstTick };
  }
}
