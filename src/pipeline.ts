/**
 * The pipeline of one source: it receives the connector's changes and checkpoints, coalesces
 * changes per lens, delivers one batch per lens at a time, and acknowledges a checkpoint's
 * position once every change before it has been accepted. For a sink that reads rows
 * (`Sink.prepare`), the batch after the one in flight is taken early, so its reads overlap the
 * end of that delivery; it is still delivered only once that one is accepted.
 *
 * Acknowledgement works on ticks: the n-th checkpoint of the stream has tick n, and a change
 * belongs to the tick of the checkpoint that follows it. Each lens knows the tick of its
 * oldest undelivered change (in flight, taken early, queued sync, or buffered); a checkpoint
 * whose tick is below the smallest of those is safe. Checkpoints between which no buffer
 * started are merged, so the queue of checkpoints stays as short as the number of pending
 * buffers.
 *
 * Besides the connector's changes, a lens takes changes from its smart sync sweeps and from
 * operators (`enqueue`): they go through the same coalescer, so batches of a lens still go
 * one at a time. The operations operators ask for (src/control.ts) are the public methods
 * below `// ---- operations`; the status projection is src/status.ts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDuration } from './config/fragments.js';
import type { LensConfig, PipelineConfig } from './config/types.js';
import type { DeadLetters } from './dead-letters.js';
import { SinkError, TributaryError, describeError } from './errors.js';
import { LensRuntime, type InFlight, type RecordsBatch, type SyncMode } from './lens-runtime.js';
import type { LensStore } from './lens-store.js';
import type { Metrics } from './metrics.js';
import { retry } from './retry.js';
import { Sweeper } from './sweep.js';
import type { Logger, Position, RecordChange, RejectedRecord, RowReader, Sink, SourceChange, SourceConnector, SourceHandler, SourceState, StateStore } from './types.js';

/** How long a drain waits for the source connection to close. */
const CONNECTOR_STOP_TIMEOUT_MS = 5000;
/** How often replication lag is read. */
const LAG_INTERVAL_MS = 10_000;
/** Backoff bounds of a batch the sink failed (transient errors, 429s without Retry-After). */
const TRANSIENT_BACKOFF = { initialMs: 200, maxMs: 30_000 };
/** During a drain, waits are cut to this (the drain timeout bounds the whole). */
const DRAIN_WAIT_MS = 1000;

const now = () => performance.now();

/** A batch the sink refused for its content (a 4xx): it is dead-lettered, not retried. */
const isRejection = (err: unknown) => err instanceof SinkError && err.kind === 'rejected';

export interface PipelineOptions {
  sourceName: string;
  /**
   * Creates the source's connector once this process may read the source (it holds the lease).
   * A factory that probes the source first reports through `report` (this pipeline).
   */
  connect: (report: Pick<SourceHandler, 'state' | 'capture'>) => Promise<SourceConnector>;
  lenses: Array<{ name: string; config: LensConfig; sink: Sink }>;
  settings: PipelineConfig;
  state: StateStore;
  lensStore: LensStore;
  deadLetters: DeadLetters;
  metrics: Metrics;
  log: Logger;
  /** Opens a RowReader for a lens, for smart sync sweeps; undefined for sources that read no tables. */
  openReader?: (lens: string) => Promise<RowReader>;
  /**
   * Every replica reads the source at once (`SourceCapabilities.sharedReading`): its position
   * is the source's own (the group's committed offsets) and is not saved, and an operator's
   * pause taken by one replica is followed by the others (`followPause`).
   */
  sharedReading?: boolean;
}

export class Pipeline implements SourceHandler {
  readonly sourceName: string;
  readonly sharedReading: boolean;
  readonly lenses = new Map<string, LensRuntime>();
  /** Set by `start` (standby replicas never create one). */
  connector: SourceConnector | undefined;
  sourceState: SourceState = 'connecting';
  sourceDetail: string | undefined;
  captureMode: { mode: string; reason: string } | undefined;
  /** The newest acknowledged position. */
  position: Position | undefined;
  /** Why the connector stopped reading for good (it will not reconnect by itself), if it did. */
  stoppedWith: Error | undefined;

  private readonly options: PipelineOptions;
  private readonly settings: PipelineConfig;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private tick = 0;
  /** Checkpoints not yet acknowledged, oldest first. */
  private readonly checkpoints: Array<{ tick: number; position: Position }> = [];
  /** A buffer started since the last checkpoint was queued: the next one may not be merged. */
  private bufferStarted = false;
  private savedPosition: Position | undefined;
  private backpressure = false;
  private draining = false;
  /** The drain ended: deliveries still failing give up (their batches replay on the next start). */
  private stopped = false;
  private pendingBytes = 0;
  private buffered = 0;
  /** Dead letters of rejected source records being stored, with the tick they belong to. */
  private readonly lettersInFlight = new Map<Promise<void>, number>();
  /** Deliveries in progress, so drain can wait for them. */
  private readonly deliveries = new Set<Promise<void>>();
  private lagTimer: NodeJS.Timeout | undefined;
  /** Tables whose unmatched changes were warned about (once each). */
  private readonly unmatchedTables = new Set<string>();

  constructor(options: PipelineOptions) {
    this.options = options;
    this.sourceName = options.sourceName;
    this.sharedReading = options.sharedReading ?? false;
    this.settings = options.settings;
    this.metrics = options.metrics;
    this.log = options.log;
    for (const lens of options.lenses) this.lenses.set(lens.name, new LensRuntime(lens.name, lens.config, lens.sink, options.metrics));
  }

  /** Starts the connector, then queues the full syncs that first starts and crashes left owed. */
  async start(): Promise<void> {
    const { lensStore, state } = this.options;
    const stored = new Map<string, Awaited<ReturnType<LensStore['load']>>>();
    for (const lens of this.lenses.values()) {
      const saved = await lensStore.load(lens.name);
      stored.set(lens.name, saved);
      if (saved?.fullSync === 'owed') lens.owed = saved.reason ?? undefined;
      if (saved?.paused) lens.paused = true;
    }
    this.position = this.savedPosition = await state.get<Position>(`position/${this.sourceName}`);
    this.connector = await this.options.connect(this);
    for (const lens of this.lenses.values()) if (lens.paused) this.applyPause(lens, true);
    const { fresh } = await this.connector.start(this, this.savedPosition);
    void this.connector.stopped?.then((err) => (this.stoppedWith = err));
    for (const lens of this.lenses.values()) {
      const saved = stored.get(lens.name);
      if (!saved) {
        if (lens.config.initialSync === 'full') this.resync(lens.name, 'initial sync');
        else await lensStore.save(lens.name, { fullSync: 'skipped', reason: 'initialSync: none' });
      } else if (saved.fullSync === 'pending') {
        this.resync(lens.name, saved.reason ?? 'full sync not yet accepted before the last stop');
      } else if (fresh) {
        this.resync(lens.name, 'the replication slot was created again; changes made meanwhile are unknown');
      }
      if (lens.state === 'starting') lens.state = 'streaming';
      await this.startSweeper(lens);
    }
    this.lagTimer = setInterval(() => void this.pollLag(), LAG_INTERVAL_MS);
    this.lagTimer.unref();
    void this.pollLag();
  }

  private async startSweeper(lens: LensRuntime): Promise<void> {
    const openReader = this.options.openReader;
    if (!lens.config.smartSyncInterval || !openReader) return;
    lens.sweeper = new Sweeper({
      lens: lens.name,
      intervalMs: parseDuration(lens.config.smartSyncInterval),
      openReader: () => openReader(lens.name),
      store: this.options.state,
      emit: async (changes) => {
        if (!(await this.enqueue(lens.name, changes))) throw new TributaryError(`lens "${lens.name}": stopped before the sweep's changes were delivered`);
      },
      log: this.log,
    });
    if (lens.paused) lens.sweeper.setPaused(true);
    await lens.sweeper.start();
  }

  // ---- SourceHandler: the hot path -------------------------------------------------------

  change(change: SourceChange): void {
    const lens = this.lenses.get(change.lens);
    if (!lens) return;
    lens.counters.captured++;
    this.add(lens, change.id, change.action, change.committedAt, change.row);
  }

  /** Puts one change in the lens's coalescer: flushes, and pauses the source when too much is pending. */
  private add(lens: LensRuntime, id: string, action: RecordChange['action'], committedAt: number, row?: Record<string, unknown> | null): void {
    const buffer = lens.buffer;
    const sizeBefore = buffer.size;
    const bytesBefore = buffer.bytes;
    if (buffer.add(id, action, committedAt, this.tick + 1, now(), row)) {
      this.bufferStarted = true;
      lens.timer = setTimeout(() => this.flush(lens), lens.config.maxWaitMs);
    }
    if (buffer.size === sizeBefore) lens.counters.coalesced++;
    this.buffered += buffer.size - sizeBefore;
    this.pendingBytes += buffer.bytes - bytesBefore;
    if (buffer.size >= lens.config.maxBatch) this.flush(lens);
    if (!this.backpressure && (this.buffered >= this.settings.maxPendingChanges || this.pendingBytes >= this.settings.maxPendingBytes)) {
      this.backpressure = true;
      this.metrics.source(this.sourceName).paused = true;
      this.connector?.pause();
    }
  }

  checkpoint(position: Position): void {
    this.tick++;
    const last = this.checkpoints[this.checkpoints.length - 1];
    if (last && !this.bufferStarted) {
      last.tick = this.tick;
      last.position = position;
    } else {
      this.checkpoints.push({ tick: this.tick, position });
      this.bufferStarted = false;
    }
    this.acknowledge();
  }

  resync(lensName: string, reason: string): void {
    const lens = this.lenses.get(lensName);
    if (!lens) return;
    this.log[reason === 'initial sync' ? 'info' : 'warn']({ lens: lensName, reason }, 'full sync requested');
    this.queueSync(lens, 'full', reason);
    void this.options.lensStore.save(lens.name, { fullSync: 'pending', reason });
    this.flush(lens);
  }

  fullSyncOwed(lensName: string, reason: string): void {
    const lens = this.lenses.get(lensName);
    if (!lens) return;
    this.log.error({ lens: lensName, reason }, 'changes were lost: the lens needs a full sync');
    lens.owed = reason;
    void this.options.lensStore.save(lens.name, { fullSync: 'owed', reason });
  }

  unmatched(table: string, advice: string): void {
    this.metrics.unmatched.inc({ source: this.sourceName, table });
    if (this.unmatchedTables.has(table)) return;
    this.unmatchedTables.add(table);
    this.log.warn({ table, advice }, `changes of table ${table} match no lens and are not delivered (counted in tributary_changes_unmatched_total): ${advice}`);
  }

  /** An undecodable record: a dead letter of its lens, or of the pseudo-lens named after the source when no lens can be told. */
  reject(record: RejectedRecord): void {
    const lens = record.lens ?? this.sourceName;
    this.metrics.deadLetters.inc({ lens });
    this.log.error({ lens, where: record.where, reason: record.reason }, 'a source record cannot be understood; it is in the dead-letter store');
    // Like a change, the letter belongs to the next checkpoint: the position waits until it is stored.
    const tick = this.tick + 1;
    this.bufferStarted = true;
    const write = this.options.deadLetters
      .add({ lens, reason: record.reason, error: record.reason, attempts: 1, provenance: { source: this.sourceName, position: record.where, record: record.raw } })
      .finally(() => {
        this.lettersInFlight.delete(write);
        this.acknowledge();
      });
    this.lettersInFlight.set(write, tick);
  }

  state(state: SourceState, detail?: string): void {
    this.sourceState = state;
    this.sourceDetail = detail;
  }

  capture(mode: string, reason: string): void {
    this.captureMode = { mode, reason };
  }

  private queueSync(lens: LensRuntime, mode: SyncMode, reason: string): void {
    if (!lens.sync) {
      lens.sync = { tick: this.tick + 1, reason, mode };
      this.bufferStarted = true;
    } else if (mode === 'full') {
      lens.sync.mode = 'full'; // a full sync covers an incremental one
      lens.sync.reason = reason;
    }
  }

  // ---- delivery ----------------------------------------------------------------------------

  /**
   * Starts the lens's next delivery; while one is in flight, takes the next batch early for a
   * sink that reads ahead (`prepareNext`).
   */
  private flush(lens: LensRuntime): void {
    if (lens.paused && !this.draining) return;
    if (lens.inFlight) return this.prepareNext(lens);
    clearTimeout(lens.timer);
    lens.timer = undefined;
    if (lens.next) {
      lens.inFlight = lens.next;
      lens.next = undefined;
    } else if (lens.sync) {
      lens.inFlight = { kind: 'sync', firstTick: lens.sync.tick, reason: lens.sync.reason, mode: lens.sync.mode };
      lens.sync = undefined;
    } else if (lens.buffer.size > 0) {
      lens.inFlight = this.takeBatch(lens);
    } else {
      return;
    }
    const delivery = this.deliver(lens, lens.inFlight).finally(() => this.deliveries.delete(delivery));
    this.deliveries.add(delivery);
    if (lens.buffer.size >= lens.config.maxBatch) this.prepareNext(lens); // a full batch waits already
  }

  /**
   * Takes the batch after the one in flight out of the buffer and hands it to `Sink.prepare`,
   * so the sink reads its rows while the one in flight finishes. Taken, the batch is sealed: a
   * change that comes later goes to the batch after it, which reads the row again. Not behind
   * a sync, queued or in flight (a full sync may take minutes: rows read now would wait as long).
   */
  private prepareNext(lens: LensRuntime): void {
    if (lens.next || lens.sync || lens.inFlight?.kind !== 'records' || lens.buffer.size === 0 || !lens.sink.prepare) return;
    clearTimeout(lens.timer);
    lens.timer = undefined;
    lens.next = this.takeBatch(lens);
    lens.sink.prepare(lens.name, lens.next.changes);
  }

  /** The lens's next batch out of its buffer (which may then let the source resume). */
  private takeBatch(lens: LensRuntime): RecordsBatch {
    const sizeBefore = lens.buffer.size;
    const bytesBefore = lens.buffer.bytes;
    const batch: RecordsBatch = { kind: 'records', ...lens.buffer.take(lens.config.maxBatch) };
    this.buffered -= sizeBefore - lens.buffer.size;
    this.pendingBytes -= bytesBefore - lens.buffer.bytes;
    this.maybeResume();
    return batch;
  }

  /**
   * Delivers one batch, retrying (the one retry helper, src/retry.ts) until the sink accepts it
   * or rejects it (dead-lettered). A drain cuts the wait short and goes on with short waits; once
   * the drain gave up (`stopped`), the batch is left to replay on the next start.
   */
  private async deliver(lens: LensRuntime, batch: InFlight): Promise<void> {
    if (batch.kind === 'sync') lens.state = 'syncing';
    let attempts = 1;
    for (;;) {
      lens.wake = new AbortController();
      try {
        await retry(() => this.send(lens, batch), {
          retriable: (err) => !this.stopped && !(isRejection(err) && batch.kind === 'records'),
          delayFor: (err) => this.retryDelay(err),
          ...TRANSIENT_BACKOFF,
          signal: lens.wake.signal,
          onRetry: (err, attempt, delayMs) => {
            attempts = attempt + 1;
            this.deliveryFailed(lens, err, attempt, delayMs);
          },
        });
        break;
      } catch (err) {
        if (isRejection(err) && batch.kind === 'records') {
          this.deliveryFailed(lens, err, attempts);
          await this.deadLetter(lens, batch, err as SinkError, attempts);
          break;
        }
        if (this.stopped) return; // left in flight: it replays on the next start
      }
    }
    this.delivered(lens, batch);
  }

  /** Counts, logs and shows a failed delivery; `delayMs` until the next try, if there is one. */
  private deliveryFailed(lens: LensRuntime, err: unknown, attempt: number, delayMs?: number): void {
    const kind = err instanceof SinkError ? err.kind : 'fatal';
    this.metrics.sinkErrors.inc({ lens: lens.name, class: kind });
    lens.lastError = describeError(err);
    lens.state = kind === 'fatal' || kind === 'rejected' ? 'error' : 'retrying';
    if (delayMs === undefined) return;
    const logLevel = attempt === 1 || kind === 'fatal' ? 'warn' : 'debug';
    this.log[logLevel]({ lens: lens.name, attempt, kind, delayMs: Math.round(delayMs), err: lens.lastError }, 'delivery failed; holding position and retrying');
  }

  private send(lens: LensRuntime, batch: InFlight): Promise<void> {
    if (batch.kind === 'records') return lens.sink.write(lens.name, batch.changes);
    return batch.mode === 'full' ? lens.sink.requestFullSync(lens.name) : lens.sink.requestIncrementalSync(lens.name);
  }

  /**
   * How long a failed batch waits: fatal errors (auth, unknown lens) `errorRetryMs`; a 429 what
   * its Retry-After asked; transient failures the retry helper's backoff. During a drain, at
   * most DRAIN_WAIT_MS (the drain timeout bounds the whole).
   */
  private retryDelay(err: unknown): number | undefined {
    const kind = err instanceof SinkError ? err.kind : 'fatal';
    const delay = kind === 'fatal' ? this.settings.errorRetryMs : kind === 'rate-limited' ? (err as SinkError).details.retryAfterMs : undefined;
    return this.draining ? Math.min(delay ?? DRAIN_WAIT_MS, DRAIN_WAIT_MS) : delay;
  }

  private delivered(lens: LensRuntime, batch: InFlight): void {
    lens.inFlight = undefined;
    if (lens.state !== 'draining') lens.state = 'streaming';
    if (batch.kind === 'sync') {
      this.metrics.batches.inc({ lens: lens.name, outcome: batch.mode === 'full' ? 'full_sync' : 'incremental_sync' });
      if (!lens.sync && batch.mode === 'full') {
        lens.owed = undefined;
        void this.options.lensStore.save(lens.name, { fullSync: 'done', reason: batch.reason });
      }
    } else {
      const at = Date.now();
      for (const change of batch.changes) lens.latency.observe((at - change.committedAt!) / 1000);
      lens.counters.delivered += batch.changes.length;
      if (lens.sweeper && this.connector?.scheduled) lens.sweeper.noteDelivered(batch.changes.filter((c) => c.action === 'upsert').map((c) => c.id));
      this.metrics.batchSize.observe({ lens: lens.name }, batch.changes.length);
      this.metrics.batches.inc({ lens: lens.name, outcome: 'delivered' });
    }
    this.acknowledge();
    lens.settleWaiters();
    this.flushNext(lens);
  }

  /**
   * After a delivery: the batch taken early, then the next batch now if one is due (taken
   * early in turn when one is in flight), else when its maxWaitMs is up.
   */
  private flushNext(lens: LensRuntime): void {
    if (lens.next) this.flush(lens);
    const buffer = lens.buffer;
    if (buffer.size === 0 && !lens.sync) return;
    const waited = now() - buffer.firstAt;
    const due = this.draining || lens.waiters.length > 0 || lens.sync || buffer.size >= lens.config.maxBatch || waited >= lens.config.maxWaitMs;
    if (due) this.flush(lens);
    else lens.timer ??= setTimeout(() => this.flush(lens), lens.config.maxWaitMs - waited);
  }

  private async deadLetter(lens: LensRuntime, batch: RecordsBatch, err: SinkError, attempts: number): Promise<void> {
    this.metrics.deadLetters.inc({ lens: lens.name }, batch.changes.length);
    this.metrics.batches.inc({ lens: lens.name, outcome: 'dead_lettered' });
    this.log.error({ lens: lens.name, changes: batch.changes.length, err: err.message }, 'sink rejected a batch; it is in the dead-letter store');
    await this.options.deadLetters.add({
      lens: lens.name,
      reason: `sink rejected the batch (HTTP ${err.details.status ?? '?'})`,
      error: err.message,
      attempts,
      provenance: { source: this.sourceName, position: this.position, changes: batch.changes.map(({ id, action }) => ({ id, action })), response: err.details.body },
    });
  }

  /** Acknowledges the newest checkpoint that no pending change of any lens precedes. */
  private acknowledge(): void {
    let floor = Infinity;
    for (const lens of this.lenses.values()) floor = Math.min(floor, lens.oldestTick());
    for (const tick of this.lettersInFlight.values()) floor = Math.min(floor, tick);
    let safe = 0;
    while (safe < this.checkpoints.length && this.checkpoints[safe].tick < floor) safe++;
    if (safe === 0) return;
    const position = this.checkpoints[safe - 1].position;
    this.checkpoints.splice(0, safe);
    this.position = position;
    this.connector?.acknowledge(position);
  }

  private maybeResume(): void {
    if (this.backpressure && this.buffered < this.settings.maxPendingChanges / 2 && this.pendingBytes < this.settings.maxPendingBytes / 2) {
      this.backpressure = false;
      this.metrics.source(this.sourceName).paused = false;
      this.connector?.resume();
    }
  }

  private async pollLag(): Promise<void> {
    try {
      Object.assign(this.metrics.source(this.sourceName), await this.connector?.lag?.());
    } catch (err) {
      this.log.debug({ err: describeError(err) }, 'cannot read replication lag');
    }
  }

  // ---- operations (src/control.ts) ---------------------------------------------------------

  /**
   * Queues changes for a lens outside the connector's stream (sweeps, `ingest --mode records`,
   * dead-letter replays). Resolves true once the sink accepted them all (or a newer change of
   * the same id); false if the daemon stopped first (they were not delivered).
   */
  enqueue(lensName: string, changes: RecordChange[]): Promise<boolean> {
    const lens = this.lenses.get(lensName);
    if (!lens) return Promise.reject(new Error(`no lens ${lensName} in source ${this.sourceName}`));
    if (this.draining) return Promise.resolve(false);
    const at = Date.now();
    for (const c of changes) this.add(lens, c.id, c.action, at);
    const tick = this.tick + 1;
    const delivered = new Promise<boolean>((resolve) => {
      lens.waiters.push({ tick, resolve });
      lens.settleWaiters();
    });
    this.flush(lens); // someone waits for these: no maxWaitMs
    return delivered;
  }

  /**
   * Pauses or resumes a lens (`tributary pause|resume`), kept across restarts. Saved first, so
   * replicas sharing the source (`followPause`) never see it applied here and not stored.
   */
  async setPaused(lensName: string, paused: boolean): Promise<void> {
    const lens = this.lenses.get(lensName)!;
    if (lens.paused === paused) return;
    await this.options.lensStore.save(lens.name, { paused });
    this.setLensPaused(lens, paused);
  }

  /** Applies the pause another replica sharing the source saved (each lens's stored `paused`). */
  async followPause(): Promise<void> {
    for (const lens of this.lenses.values()) {
      const paused = (await this.options.lensStore.load(lens.name))?.paused ?? false;
      if (lens.paused !== paused) {
        this.log.info({ lens: lens.name, paused }, paused ? 'lens paused by an operator (through another replica)' : 'lens resumed by an operator (through another replica)');
        this.setLensPaused(lens, paused);
      }
    }
  }

  private setLensPaused(lens: LensRuntime, paused: boolean): void {
    this.applyPause(lens, paused);
    if (!paused) this.flush(lens);
  }

  /**
   * `tributary ingest --mode full|incremental`: a full sync of the lens (and its smart sync
   * sweep now); an incremental one is a poll now where the connector schedules the lens, else
   * a request to the sink.
   */
  requestSync(lensName: string, mode: SyncMode): void {
    const lens = this.lenses.get(lensName)!;
    if (mode === 'full') {
      this.resync(lens.name, 'requested by tributary ingest --mode full');
      lens.sweeper?.runNow();
    } else if (!this.connector?.scheduled?.runNow(lens.name)) {
      this.queueSync(lens, 'incremental', 'requested by tributary ingest --mode incremental');
      this.flush(lens);
    }
  }

  private applyPause(lens: LensRuntime, paused: boolean): void {
    lens.paused = paused;
    lens.counters.paused = paused ? 1 : 0;
    this.connector?.scheduled?.setLensPaused(lens.name, paused);
    lens.sweeper?.setPaused(paused);
  }

  /**
   * Saves the acknowledged position when it moved (for status, and where polling resumes); not
   * for a source read by every replica, which keeps its own (each replica's is only its share).
   */
  async savePosition(): Promise<void> {
    const position = this.position;
    if (position === undefined || position === this.savedPosition || this.sharedReading) return;
    await this.options.state.put(`position/${this.sourceName}`, position);
    this.savedPosition = position;
  }

  // ---- stop ---------------------------------------------------------------------------------

  /**
   * Stops reading, delivers what is pending (up to `timeoutMs`), acknowledges and closes the
   * connector. Returns the number of changes left undelivered (they replay on the next start;
   * `enqueue` callers learn theirs were not delivered).
   */
  async drain(timeoutMs: number): Promise<number> {
    this.draining = true;
    // Sweeps stop at their next step; one waiting for a delivery is released below.
    const sweeps = Promise.all([...this.lenses.values()].map((l) => l.sweeper?.stop()));
    this.connector?.pause();
    clearInterval(this.lagTimer);
    for (const lens of this.lenses.values()) {
      lens.state = 'draining';
      this.flush(lens);
      lens.wake?.abort();
    }
    const deadline = Date.now() + timeoutMs;
    await this.deliverPending(deadline);
    this.acknowledge(); // while the connection is open, so the source hears of it (a slot's flush LSN)
    // A read in progress when the source was paused (a poll's page) still reports its changes:
    // they arrive by the time the connector stopped, and are delivered if the drain has time.
    await this.stopConnector();
    await this.deliverPending(deadline);
    this.stopped = true;
    for (const lens of this.lenses.values()) lens.wake?.abort();
    this.acknowledge();
    for (const lens of this.lenses.values()) lens.settleWaiters(lens.idle);
    await sweeps;
    await Promise.all([...this.lenses.values()].map((l) => l.sweeper?.close()));
    await this.savePosition().catch((err) => this.log.error({ err: describeError(err) }, 'cannot save the acknowledged position at stop'));
    for (const lens of this.lenses.values()) clearTimeout(lens.timer);
    return [...this.lenses.values()].reduce((n, l) => n + l.pending, 0);
  }

  /** Waits until every lens is idle (all delivered) or the deadline passed. */
  private async deliverPending(deadline: number): Promise<void> {
    for (const lens of this.lenses.values()) this.flush(lens);
    while ([...this.lenses.values()].some((l) => !l.idle) && Date.now() < deadline) {
      await Promise.race([Promise.all([...this.deliveries]), sleep(Math.max(0, Math.min(100, deadline - Date.now())))]);
    }
  }

  /** Stops the connector; a connection that hangs while closing must not keep the process from exiting. */
  private async stopConnector(): Promise<void> {
    const stopped = await Promise.race([(this.connector?.stop() ?? Promise.resolve()).then(() => true), sleep(CONNECTOR_STOP_TIMEOUT_MS).then(() => false)]);
    if (!stopped) this.log.warn({ timeoutMs: CONNECTOR_STOP_TIMEOUT_MS }, 'the source connection did not close in time; leaving it to the process exit');
  }
}
