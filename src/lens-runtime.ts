/**
 * What the pipeline keeps in memory per lens: its coalescing buffer, the batch in flight, a
 * queued sync, its state for status, and the operator's pause. See src/pipeline.ts.
 */
import type { LensConfig } from './config/types.js';
import { Coalescer } from './coalescer.js';
import type { LensCounters, Metrics } from './metrics.js';
import type { Sweeper } from './sweep.js';
import type { RecordChange, Sink, SourceState } from './types.js';

export type LensState = 'starting' | 'syncing' | 'streaming' | 'retrying' | 'error' | 'draining' | 'paused' | SourceState;

/** What a sync request asks of the sink: re-read everything, or what changed since its cursor. */
export type SyncMode = 'full' | 'incremental';

export type RecordsBatch = { kind: 'records'; changes: RecordChange[]; firstTick: number };
export type InFlight = RecordsBatch | { kind: 'sync'; firstTick: number; reason: string; mode: SyncMode };

export class LensRuntime {
  readonly buffer = new Coalescer();
  inFlight: InFlight | undefined;
  /**
   * The batch after the one in flight, taken out of the buffer early so its sink can start
   * reading its rows (`Sink.prepare`); delivered as soon as the one in flight is accepted.
   */
  next: RecordsBatch | undefined;
  sync: { tick: number; reason: string; mode: SyncMode } | undefined;
  state: LensState = 'starting';
  paused = false;
  sweeper: Sweeper | undefined;
  /** `enqueue` callers waiting until the changes they queued (up to `tick`) are delivered. */
  readonly waiters: Array<{ tick: number; resolve: (delivered: boolean) => void }> = [];
  lastError: string | undefined;
  /** Why a full sync is owed (`fullSyncOwed`) until one is accepted. */
  owed: string | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Wakes a delivery that is waiting out an error, for drain. */
  wake: AbortController | undefined;
  readonly counters: LensCounters;
  readonly latency;

  constructor(
    readonly name: string,
    readonly config: LensConfig,
    readonly sink: Sink,
    metrics: Metrics,
  ) {
    this.counters = metrics.lens(name);
    this.latency = metrics.latency.labels(name);
  }

  /** Tick of the oldest change not yet accepted by the sink, or Infinity. */
  oldestTick(): number {
    return Math.min(this.inFlight?.firstTick ?? Infinity, this.next?.firstTick ?? Infinity, this.sync?.tick ?? Infinity, this.buffer.firstTick ?? Infinity);
  }

  get idle(): boolean {
    return !this.inFlight && !this.next && !this.sync && this.buffer.size === 0;
  }

  /** Changes buffered, taken early, or in flight. */
  get pending(): number {
    return this.buffer.size + (this.next?.changes.length ?? 0) + (this.inFlight?.kind === 'records' ? this.inFlight.changes.length : 0);
  }

  /** Resolves the `enqueue` callers whose changes are all delivered (or, with `false`, all of them). */
  settleWaiters(delivered = true): void {
    const oldest = delivered ? this.oldestTick() : Infinity;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i].tick < oldest) this.waiters.splice(i, 1)[0].resolve(delivered);
    }
  }
}
