/**
 * The pipeline of one source: it receives the connector's changes and checkpoints, coalesces
 * changes per lens, delivers one batch per lens at a time, and acknowledges a checkpoint's
 * position once every change before it has been accepted.
 *
 * Acknowledgement works on ticks: the n-th checkpoint of the stream has tick n, and a change
 * belongs to the tick of the checkpoint that follows it. Each lens knows the tick of its
 * oldest undelivered change (in flight, queued full sync, or buffered); a checkpoint whose
 * tick is below the smallest of those is safe. Checkpoints between which no buffer started
 * are merged, so the queue of checkpoints stays as short as the number of pending buffers.
 *
 * Besides the connector's changes, a lens takes changes from its smart sync sweeps and from
 * operators (`tributary ingest`): `enqueue` puts them in the same coalescer, so batches of a
 * lens still go one at a time. An operator may pause a lens: its deliveries are held (a
 * scheduled connector also stops polling it, and its sweeps wait) until it is resumed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDuration } from './config/fragments.js';
import type { LensConfig, PipelineConfig } from './config/types.js';
import { Coalescer } from './coalescer.js';
import { SinkError, describeError } from './errors.js';
import type { Metrics, LensCounters } from './metrics.js';
import { backoffDelay } from './retry.js';
import { Sweeper, type SweepProgress } from './sweep.js';
import type {
  ControlRequest,
  Logger,
  Position,
  RecordChange,
  RowReader,
  Sink,
  SourceChange,
  SourceConnector,
  SourceHandler,
  SourceState,
  StateStore,
} from './types.js';

/** How long a drain waits for the source connection to close. */
const CONNECTOR_STOP_TIMEOUT_MS = 5000;

export type LensState = 'starting' | 'syncing' | 'streaming' | 'retrying' | 'error' | 'draining' | 'paused' | SourceState;

export interface LensStatus {
  lens: string;
  source: string;
  state: LensState;
  /** The source's last acknowledged position. */
  position?: Position;
  pending: number;
  delivered: number;
  captured: number;
  dlq: number;
  lastError?: string;
  /** A full sync is queued or in flight, and why. */
  fullSync?: string;
  /** The capture mode `capture: auto` chose for the source, and why. */
  capture?: { mode: string; reason: string };
  /** Paused by an operator (`tributary pause`). */
  paused: boolean;
  /** Smart sync sweeps of the lens, when it has smartSyncInterval. */
  sweep?: SweepProgress;
}

/** What the state store keeps per lens under `lens/<name>`. */
interface StoredLens {
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

type InFlight =
  | { kind: 'records'; changes: RecordChange[]; firstTick: number }
  | { kind: 'full'; firstTick: number; reason: string; mode: SyncMode };

/** What a sync request asks of the sink: re-read everything, or what changed since its cursor. */
type SyncMode = 'full' | 'incremental';

const now = () => performance.now();

class LensRuntime {
  readonly buffer = new Coalescer();
  inFlight: InFlight | undefined;
  fullSync: { tick: number; reason: string; mode: SyncMode } | undefined;
  state: LensState = 'starting';
  paused = false;
  stored: Omit<StoredLens, 'updatedAt'> = { fullSync: 'skipped' };
  sweeper: Sweeper | undefined;
  /** `enqueue` callers waiting until the changes they queued (up to `tick`) are delivered. */
  readonly waiters: Array<{ tick: number; resolve: () => void }> = [];
  lastError: string | undefined;
  /** Why a full sync is owed (`fullSyncOwed`) until one is accepted. */
  owed: string | undefined;
  dlq = 0;
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
    return Math.min(this.inFlight?.firstTick ?? Infinity, this.fullSync?.tick ?? Infinity, this.buffer.firstTick ?? Infinity);
  }

  get idle(): boolean {
    return !this.inFlight && !this.fullSync && this.buffer.size === 0;
  }
}

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
  metrics: Metrics;
  log: Logger;
  /** Opens a RowReader for a lens: smart sync sweeps need it (lenses with smartSyncInterval). */
  openReader?: (lens: string, config: LensConfig) => Promise<RowReader>;
}

export class Pipeline implements SourceHandler {
  readonly sourceName: string;
  private readonly connect: PipelineOptions['connect'];
  /** Set by `start` (standby replicas never create one). */
  private connector: SourceConnector | undefined;
  private readonly lenses = new Map<string, LensRuntime>();
  private readonly settings: PipelineConfig;
  private readonly store: StateStore;
  private readonly metrics: Metrics;
  private readonly log: Logger;

  private tick = 0;
  /** Checkpoints not yet acknowledged, oldest first. */
  private readonly checkpoints: Array<{ tick: number; position: Position }> = [];
  /** A buffer started since the last checkpoint was queued: the next one may not be merged. */
  private bufferStarted = false;
  private position: Position | undefined;
  private savedPosition: Position | undefined;
  private sourceState: SourceState = 'connecting';
  private sourceDetail: string | undefined;
  private captureMode: { mode: string; reason: string } | undefined;
  private paused = false;
  private draining = false;
  private pendingBytes = 0;
  private buffered = 0;
  /** Deliveries in progress, so drain can wait for them. */
  private readonly deliveries = new Set<Promise<void>>();
  private lagTimer: NodeJS.Timeout | undefined;
  private readonly openReader: PipelineOptions['openReader'];

  constructor(options: PipelineOptions) {
    this.openReader = options.openReader;
    this.sourceName = options.sourceName;
    this.connect = options.connect;
    this.settings = options.settings;
    this.store = options.state;
    this.metrics = options.metrics;
    this.log = options.log;
    for (const lens of options.lenses) this.lenses.set(lens.name, new LensRuntime(lens.name, lens.config, lens.sink, options.metrics));
  }

  /** Starts the connector, then queues the full syncs that first starts and crashes left owed. */
  async start(): Promise<void> {
    const stored = new Map<string, StoredLens | undefined>();
    for (const name of this.lenses.keys()) stored.set(name, await this.store.get<StoredLens>(`lens/${name}`));
    this.position = this.savedPosition = await this.store.get<Position>(`position/${this.sourceName}`);
    for (const lens of this.lenses.values()) {
      const saved = stored.get(lens.name);
      if (saved) lens.stored = { fullSync: saved.fullSync, reason: saved.reason, paused: saved.paused };
      if (saved?.fullSync === 'owed') lens.owed = saved.reason;
      if (saved?.paused) this.setPaused(lens, true);
    }
    this.connector = await this.connect(this);
    if (this.paused) this.connector.pause();
    const { fresh } = await this.connector.start(this, this.savedPosition);
    for (const lens of this.lenses.values()) {
      const saved = stored.get(lens.name);
      if (!saved) {
        if (lens.config.initialSync === 'full') this.resync(lens.name, 'initial sync');
        else await this.saveLens(lens, { fullSync: 'skipped', reason: 'initialSync: none' });
      } else if (saved.fullSync === 'pending') {
        this.resync(lens.name, saved.reason ?? 'full sync not yet accepted before the last stop');
      } else if (fresh) {
        this.resync(lens.name, 'the replication slot was created again; changes made meanwhile are unknown');
      }
      if (lens.state === 'starting') lens.state = 'streaming';
      if (lens.config.smartSyncInterval && this.openReader) {
        const openReader = this.openReader;
        lens.sweeper = new Sweeper({
          lens: lens.name,
          intervalMs: parseDuration(lens.config.smartSyncInterval),
          openReader: () => openReader(lens.name, lens.config),
          store: this.store,
          emit: (changes) => this.enqueue(lens.name, changes),
          log: this.log,
        });
        if (lens.paused) lens.sweeper.setPaused(true);
        await lens.sweeper.start();
      }
    }
    this.lagTimer = setInterval(() => void this.pollLag(), 10_000);
    this.lagTimer.unref();
    void this.pollLag();
  }

  // ---- SourceHandler: the hot path -------------------------------------------------------

  change(change: SourceChange): void {
    const lens = this.lenses.get(change.lens);
    if (!lens) return;
    lens.counters.captured++;
    this.add(lens, change.id, change.action, change.committedAt);
  }

  /** Puts one change in the lens's coalescer: flushes, and pauses the source when too much is pending. */
  private add(lens: LensRuntime, id: string, action: RecordChange['action'], committedAt: number): void {
    const buffer = lens.buffer;
    const sizeBefore = buffer.size;
    const bytesBefore = buffer.bytes;
    if (buffer.add(id, action, committedAt, this.tick + 1, now())) {
      this.bufferStarted = true;
      lens.timer = setTimeout(() => this.flush(lens), lens.config.maxWaitMs);
    }
    if (buffer.size === sizeBefore) lens.counters.coalesced++;
    this.buffered += buffer.size - sizeBefore;
    this.pendingBytes += buffer.bytes - bytesBefore;
    if (buffer.size >= lens.config.maxBatch) this.flush(lens);
    if (!this.paused && (this.buffered >= this.settings.maxPendingChanges || this.pendingBytes >= this.settings.maxPendingBytes)) {
      this.paused = true;
      this.metrics.source(this.sourceName).paused = true;
      this.connector?.pause();
    }
  }

  checkpoint(position: Position): void {
    this.tick++;
    this.log.debug({ tick: this.tick, position, bufferStarted: this.bufferStarted }, 'checkpoint');
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
    this.log.warn({ lens: lensName, reason }, 'full sync requested');
    this.requestSync(lens, 'full', reason);
    void this.saveLens(lens, { fullSync: 'pending', reason });
    this.flush(lens);
  }

  fullSyncOwed(lensName: string, reason: string): void {
    const lens = this.lenses.get(lensName);
    if (!lens) return;
    this.log.error({ lens: lensName, reason }, 'changes were lost: the lens needs a full sync');
    lens.owed = reason;
    void this.saveLens(lens, { fullSync: 'owed', reason });
  }

  private requestSync(lens: LensRuntime, mode: SyncMode, reason: string): void {
    if (!lens.fullSync) {
      lens.fullSync = { tick: this.tick + 1, reason, mode };
      this.bufferStarted = true;
    } else if (mode === 'full') {
      lens.fullSync.mode = 'full'; // a full sync covers an incremental one
      lens.fullSync.reason = reason;
    }
  }

  state(state: SourceState, detail?: string): void {
    this.sourceState = state;
    this.sourceDetail = detail;
  }

  capture(mode: string, reason: string): void {
    this.captureMode = { mode, reason };
  }

  // ---- delivery ----------------------------------------------------------------------------

  /** Starts the lens's next delivery unless one is in flight. */
  private flush(lens: LensRuntime): void {
    if (lens.inFlight || (lens.paused && !this.draining)) return;
    if (lens.timer) {
      clearTimeout(lens.timer);
      lens.timer = undefined;
    }
    if (lens.fullSync) {
      lens.inFlight = { kind: 'full', firstTick: lens.fullSync.tick, reason: lens.fullSync.reason, mode: lens.fullSync.mode };
      lens.fullSync = undefined;
    } else if (lens.buffer.size > 0) {
      const sizeBefore = lens.buffer.size;
      const bytesBefore = lens.buffer.bytes;
      lens.inFlight = { kind: 'records', ...lens.buffer.take(lens.config.maxBatch) };
      this.buffered -= sizeBefore - lens.buffer.size;
      this.pendingBytes -= bytesBefore - lens.buffer.bytes;
      this.maybeResume();
    } else {
      return;
    }
    const delivery = this.deliver(lens, lens.inFlight).finally(() => this.deliveries.delete(delivery));
    this.deliveries.add(delivery);
  }

  private async deliver(lens: LensRuntime, batch: InFlight): Promise<void> {
    if (batch.kind === 'full') lens.state = 'syncing';
    for (let attempt = 1; ; attempt++) {
      try {
        if (batch.kind === 'full') await (batch.mode === 'full' ? lens.sink.requestFullSync(lens.name) : lens.sink.requestIncrementalSync(lens.name));
        else await lens.sink.write(lens.name, batch.changes);
        break;
      } catch (err) {
        const kind = err instanceof SinkError ? err.kind : 'fatal';
        this.metrics.sinkErrors.inc({ lens: lens.name, class: kind });
        lens.lastError = describeError(err);
        if (kind === 'rejected' && batch.kind === 'records') {
          await this.deadLetter(lens, batch, err as SinkError, attempt);
          break;
        }
        const delayMs =
          kind === 'fatal'
            ? this.settings.errorRetryMs
            : kind === 'rate-limited'
              ? ((err as SinkError).details.retryAfterMs ?? backoffDelay(attempt - 1, 500, 30_000))
              : backoffDelay(attempt - 1, 200, 30_000);
        lens.state = kind === 'fatal' || kind === 'rejected' ? 'error' : 'retrying';
        const logLevel = attempt === 1 || kind === 'fatal' ? 'warn' : 'debug';
        this.log[logLevel]({ lens: lens.name, attempt, kind, delayMs: Math.round(delayMs), err: lens.lastError }, 'delivery failed; holding position and retrying');
        lens.wake = new AbortController();
        // During a drain, transient waits are cut short: the drain timeout bounds them.
        await sleep(this.draining ? Math.min(delayMs, 1000) : delayMs, undefined, { signal: lens.wake.signal }).catch(() => {});
        lens.wake = undefined;
      }
    }
    this.delivered(lens, batch);
  }

  private delivered(lens: LensRuntime, batch: InFlight): void {
    lens.inFlight = undefined;
    if (lens.state !== 'draining') lens.state = 'streaming';
    if (batch.kind === 'full') {
      this.metrics.batches.inc({ lens: lens.name, outcome: batch.mode === 'full' ? 'full_sync' : 'incremental_sync' });
      if (!lens.fullSync && batch.mode === 'full') {
        lens.owed = undefined;
        void this.saveLens(lens, { fullSync: 'done', reason: batch.reason });
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
    this.wakeWaiters(lens);
    const buffer = lens.buffer;
    if (buffer.size > 0 || lens.fullSync) {
      const waited = now() - buffer.firstAt;
      const awaited = lens.waiters.length > 0;
      if (this.draining || awaited || lens.fullSync || buffer.size >= lens.config.maxBatch || waited >= lens.config.maxWaitMs) this.flush(lens);
      else lens.timer ??= setTimeout(() => this.flush(lens), lens.config.maxWaitMs - waited);
    }
  }

  private async deadLetter(lens: LensRuntime, batch: Extract<InFlight, { kind: 'records' }>, err: SinkError, attempts: number) {
    const at = new Date().toISOString();
    lens.dlq += batch.changes.length;
    this.metrics.deadLetters.inc({ lens: lens.name }, batch.changes.length);
    this.metrics.batches.inc({ lens: lens.name, outcome: 'dead_lettered' });
    this.log.error({ lens: lens.name, changes: batch.changes.length, err: err.message }, 'sink rejected a batch; it is in the dead-letter store');
    for (;;) {
      try {
        await this.store.addDeadLetter({
          lens: lens.name,
          reason: `sink rejected the batch (HTTP ${err.details.status ?? '?'})`,
          error: err.message,
          attempts,
          firstSeen: at,
          lastSeen: at,
          provenance: { source: this.sourceName, position: this.position, changes: batch.changes.map(({ id, action }) => ({ id, action })), response: err.details.body },
        });
        return;
      } catch (storeErr) {
        this.log.error({ err: describeError(storeErr) }, 'cannot write the dead-letter store; retrying');
        await sleep(1000);
      }
    }
  }

  /** Acknowledges the newest checkpoint that no pending change of any lens precedes. */
  private acknowledge(): void {
    let floor = Infinity;
    for (const lens of this.lenses.values()) floor = Math.min(floor, lens.oldestTick());
    let safe = 0;
    while (safe < this.checkpoints.length && this.checkpoints[safe].tick < floor) safe++;
    if (safe === 0) return;
    const position = this.checkpoints[safe - 1].position;
    this.checkpoints.splice(0, safe);
    this.position = position;
    this.connector?.acknowledge(position);
  }

  private maybeResume(): void {
    if (this.paused && this.buffered < this.settings.maxPendingChanges / 2 && this.pendingBytes < this.settings.maxPendingBytes / 2) {
      this.paused = false;
      this.metrics.source(this.sourceName).paused = false;
      this.connector?.resume();
    }
  }

  private async saveLens(lens: LensRuntime, value: Partial<Omit<StoredLens, 'updatedAt'>>): Promise<void> {
    lens.stored = { ...lens.stored, ...value };
    try {
      await this.store.put(`lens/${lens.name}`, { ...lens.stored, updatedAt: new Date().toISOString() });
    } catch (err) {
      this.log.error({ lens: lens.name, err: describeError(err) }, 'cannot save lens state');
    }
  }

  /** Resolves the `enqueue` callers whose changes are all delivered. */
  private wakeWaiters(lens: LensRuntime): void {
    const oldest = lens.oldestTick();
    for (let i = lens.waiters.length - 1; i >= 0; i--) {
      if (lens.waiters[i].tick < oldest) lens.waiters.splice(i, 1)[0].resolve();
    }
  }

  private async pollLag(): Promise<void> {
    try {
      Object.assign(this.metrics.source(this.sourceName), await this.connector?.lag?.());
    } catch (err) {
      this.log.debug({ err: describeError(err) }, 'cannot read replication lag');
    }
  }

  // ---- control ----------------------------------------------------------------------------

  /**
   * Queues changes for a lens outside the connector's stream (sweeps, `ingest --mode records`).
   * Resolves once the sink accepted them all (or a newer change of the same id).
   */
  enqueue(lensName: string, changes: RecordChange[]): Promise<void> {
    const lens = this.lenses.get(lensName);
    if (!lens) return Promise.reject(new Error(`no lens ${lensName} in source ${this.sourceName}`));
    const at = Date.now();
    for (const c of changes) this.add(lens, c.id, c.action, at);
    const tick = this.tick + 1;
    const delivered = new Promise<void>((resolve) => {
      lens.waiters.push({ tick, resolve });
      this.wakeWaiters(lens);
    });
    this.flush(lens); // someone waits for these: no maxWaitMs
    return delivered;
  }

  hasLens(name: string): boolean {
    return this.lenses.has(name);
  }

  /** Progress of the lenses that sweep, for metrics. */
  sweeps(): Array<[string, SweepProgress]> {
    return [...this.lenses.values()].flatMap((l): Array<[string, SweepProgress]> => (l.sweeper ? [[l.name, l.sweeper.progress]] : []));
  }

  /** Applies an operator request (`tributary pause|resume|ingest`) to one of this source's lenses. */
  control(request: ControlRequest): void {
    const lens = this.lenses.get(request.lens);
    if (!lens) return;
    this.log.info({ lens: lens.name, request: request.kind, mode: 'mode' in request ? request.mode : undefined }, 'operator request');
    if (request.kind === 'dlq') {
      void this.applyDeadLetters(lens, request.action, request.ids).catch((err) =>
        this.log.error({ lens: lens.name, err: describeError(err) }, `dlq ${request.action} failed; the dead letters are kept`),
      );
      return;
    }
    if (request.kind !== 'ingest') {
      const paused = request.kind === 'pause';
      if (lens.paused === paused) return;
      this.setPaused(lens, paused);
      void this.saveLens(lens, { paused });
      if (!paused) this.flush(lens);
      return;
    }
    if (request.mode === 'records') {
      void this.enqueue(lens.name, request.changes);
    } else if (request.mode === 'full') {
      this.resync(lens.name, 'requested by tributary ingest --mode full');
      lens.sweeper?.runNow();
    } else if (!this.connector?.scheduled?.runNow(lens.name)) {
      this.requestSync(lens, 'incremental', 'requested by tributary ingest --mode incremental');
      this.flush(lens);
    }
  }

  /**
   * `tributary dlq replay|drop`: replay delivers the letters' changes again through the lens's
   * batches and removes the letters once the sink accepted them (a new rejection makes a new
   * letter); drop removes them.
   */
  private async applyDeadLetters(lens: LensRuntime, action: 'replay' | 'drop', ids?: string[]): Promise<void> {
    const letters = (await this.store.listDeadLetters(lens.name)).filter((l) => !ids || ids.includes(l.id));
    if (action === 'replay') await this.enqueue(lens.name, letters.flatMap((l) => l.provenance.changes ?? []));
    const removed = await this.store.removeDeadLetters(letters.map((l) => l.id));
    lens.dlq = Math.max(0, lens.dlq - letters.reduce((n, l) => n + (l.provenance.changes?.length ?? 0), 0));
    this.log.info({ lens: lens.name, letters: removed }, action === 'replay' ? 'dead letters delivered again' : 'dead letters dropped');
  }

  private setPaused(lens: LensRuntime, paused: boolean): void {
    lens.paused = paused;
    lens.counters.paused = paused ? 1 : 0;
    this.connector?.scheduled?.setLensPaused(lens.name, paused);
    lens.sweeper?.setPaused(paused);
  }


  status(): LensStatus[] {
    const sourceDown = this.sourceState !== 'streaming';
    return [...this.lenses.values()].map((lens) => {
      const pending = lens.buffer.size + (lens.inFlight?.kind === 'records' ? lens.inFlight.changes.length : 0);
      lens.counters.pending = pending;
      return {
        lens: lens.name,
        source: this.sourceName,
        state: lens.paused ? 'paused' : lens.owed ? 'error' : sourceDown && lens.state !== 'error' ? this.sourceState : lens.state,
        position: this.position !== undefined && this.connector?.scheduled ? this.connector.scheduled.lensPosition(this.position, lens.name) : this.position,
        pending,
        delivered: lens.counters.delivered,
        captured: lens.counters.captured,
        dlq: lens.dlq,
        lastError: lens.owed ?? (lens.state === 'streaming' && !sourceDown ? undefined : (sourceDown ? this.sourceDetail : undefined) ?? lens.lastError),
        fullSync: lens.fullSync?.reason ?? (lens.inFlight?.kind === 'full' ? lens.inFlight.reason : undefined),
        capture: this.captureMode,
        paused: lens.paused,
        sweep: lens.sweeper && { ...lens.sweeper.progress },
      };
    });
  }

  /** Saves the acknowledged position when it moved (for status and as a record of progress). */
  async savePosition(): Promise<void> {
    const position = this.position;
    if (position === undefined || position === this.savedPosition) return;
    await this.store.put(`position/${this.sourceName}`, position);
    this.savedPosition = position;
  }

  /**
   * Stops reading, delivers what is pending (up to `timeoutMs`), acknowledges and closes the
   * connector. Returns the number of changes left undelivered (they replay on the next start).
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
    while ([...this.lenses.values()].some((l) => !l.idle) && Date.now() < deadline) {
      await Promise.race([Promise.all([...this.deliveries]), sleep(Math.max(0, Math.min(100, deadline - Date.now())))]);
    }
    this.acknowledge();
    for (const lens of this.lenses.values()) for (const waiter of lens.waiters.splice(0)) waiter.resolve();
    await sweeps;
    await Promise.all([...this.lenses.values()].map((l) => l.sweeper?.close()));
    await this.savePosition().catch(() => {});
    // A connection that hangs while closing must not keep the process from exiting.
    const stopped = await Promise.race([(this.connector?.stop() ?? Promise.resolve()).then(() => true), sleep(CONNECTOR_STOP_TIMEOUT_MS).then(() => false)]);
    if (!stopped) this.log.warn({ timeoutMs: CONNECTOR_STOP_TIMEOUT_MS }, 'the source connection did not close in time; leaving it to the process exit');
    for (const lens of this.lenses.values()) clearTimeout(lens.timer);
    return [...this.lenses.values()].reduce((n, l) => n + l.buffer.size + (l.inFlight?.kind === 'records' ? l.inFlight.changes.length : 0), 0);
  }
}
