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
  reason?: string;
  /** Paused by `tributary pause`; survives restarts. */
  paused?: boolean;
  updatedAt: string;
}

export class LensStore {
  private readonly values = new Map<string, Omit<StoredLens, 'updatedAt'>>();
  private readonly saving = new Map<string, Promise<unknown>>();

  constructor(
    private readonly store: StateStore,
    private readonly writes: StateWrites,
  ) {}

  /** The saved state of a lens; undefined on its first start. */
  async load(lens: string): Promise<StoredLens | undefined> {
    const saved = await this.store.get<StoredLens>(`lens/${lens}`);
    this.values.set(lens, saved ? { fullSync: saved.fullSync, reason: saved.reason, paused: saved.paused } : { fullSync: 'skipped' });
    return saved;
  }

  /** Merges `value` into the lens's state and saves it; resolves once saved (or given up on). */
  save(lens: string, value: Partial<Omit<StoredLens, 'updatedAt'>>): Promise<unknown> {
    const merged = { ...(this.values.get(lens) ?? { fullSync: 'skipped' as const }), ...value };
    this.values.set(lens, merged);
    const previous = this.saving.get(lens) ?? Promise.resolve();
    const next = previous.then(() => this.writes.run(`state of lens ${lens}`, () => this.store.put(`lens/${lens}`, { ...merged, updatedAt: new Date().toISOString() })));
    this.saving.set(lens, next);
    return next;
  }
}
