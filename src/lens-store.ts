/**
 * What the state store keeps per lens under `lens/<name>`: whether a full sync is owed, and
 * the operator's pause. Saves go through StateWrites (retried; a lasting failure shows in
 * `/readyz`) and apply in call order.
 */
import type { StateWrites } from './state-writes.js';
import type { StateStore } from './types.js';

export interface StoredLens {
  /**
   * `pending` from the moment a full sync is wanted until the sink accepted it; `owed` when
   * changes were lost and the operator asks for it (`fullSyncOwed`).
   */
  fullSync: 'pending' | 'done' | 'skipped' | 'owed';
  reason?: string | null;
  /** Paused by `tributary pause`; survives restarts. */
  paused?: boolean;
  updatedAt: string;
}

export class LensStore {
  private readonly saving = new Map<string, Promise<unknown>>();

  constructor(
    private readonly store: StateStore,
    private readonly writes: StateWrites,
  ) {}

  /** The saved state of a lens; undefined on its first start. */
  load(lens: string): Promise<StoredLens | undefined> {
    return this.store.get<StoredLens>(`lens/${lens}`);
  }

  /**
   * Saves these fields of the lens's state (a field set to undefined is cleared), leaving the
   * others as stored: replicas reading one lens each save their own fields. Resolves once saved
   * (or given up on).
   */
  save(lens: string, value: Partial<Omit<StoredLens, 'updatedAt'>>): Promise<unknown> {
    const fields = { ...Object.fromEntries(Object.entries(value).map(([k, v]) => [k, v ?? null])), updatedAt: new Date().toISOString() };
    const previous = this.saving.get(lens) ?? Promise.resolve();
    const next = previous.then(() => this.writes.run(`state of lens ${lens}`, () => this.store.patch(`lens/${lens}`, fields)));
    this.saving.set(lens, next);
    return next;
  }
}
