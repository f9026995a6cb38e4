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
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { LensConfig, PipelineConfig } from './config/types.js';
import { Coalescer } from './coalescer.js';
import { SinkError, describeError } from './errors.js';
import type { Metrics, LensCounters } from './metrics.js';
import { backoffDelay } from './retry.js';
import type {
  Logger,
  Position,
  RecordChange,
  Sink,
  SourceChange,
  SourceConnector,
  SourceHandler,
  SourceState,
  StateStore,
} from './types.js';

export type LensState = 'starting' | 'syncing' | 'streaming' | 'retrying' | 'error' | 'draining' | SourceState;

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
}

/** What the state store keeps per lens under `lens/<name>`. */
interface StoredLens {
  /** `pending` from the moment a full sync is wanted until the sink accepted it. */
  fullSync: 'pending' | 'done' | 'skipped';
  reason?: string;
  updatedAt: string;
}

type InFlight =
  | { kind: 'records'; changes: RecordChange[]; committedAt: number[]; firstTick: number }
  | { kind: 'full'; firstTick: number; reason: string };

const now = () => performance.now();

function oldest(times: number[]): number {
  let min = Infinity;
  for (const t of times) if (t < min) min = t;
  return min;
}

class LensRuntime {
  readonly buffer = new Coalescer();
  inFlight: InFlight | undefined;
  fullSync: { tick: number; reason: string } | undefined;
  state: LensState = 'starting';
  lastError: string | undefined;
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
  connector: SourceConnector;
  lenses: Array<{ name: string; config: LensConfig; sink: Sink }>;
  settings: PipelineConfig;
  state: StateStore;
  metrics: Metrics;
  log: Logger;
}

export class Pipeline implements SourceHandler {
  readonly sourceName: string;
  private readonly connector: SourceConnector;
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

  constructor(options: PipelineOptions) {
    this.sourceName = options.sourceName;
    this.connector = options.connector;
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
    const { fresh } = await this.connector.start(this);
    for (const lens of this.lenses.values()) {
      const saved = stored.get(lens.name);
      if (!saved) {
        if (lens.config.initialSync === 'full') this.resync(lens.name, 'initial sync');
        else await this.saveLens(lens.name, { fullSync: 'skipped', reason: 'initialSync: none' });
      } else if (saved.fullSync === 'pending') {
        this.resync(lens.name, saved.reason ?? 'full sync not yet accepted before the last stop');
      } else if (fresh) {
        this.resync(lens.name, 'the replication slot was created again; changes made meanwhile are unknown');
      }
      if (lens.state === 'starting') lens.state = 'streaming';
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
    const buffer = lens.buffer;
    const sizeBefore = buffer.size;
    const bytesBefore = buffer.bytes;
    if (buffer.add(change.id, change.action, change.committedAt, this.tick + 1, now())) {
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
      this.connector.pause();
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
    if (!lens.fullSync) {
      lens.fullSync = { tick: this.tick + 1, reason };
      this.bufferStarted = true;
    }
    void this.saveLens(lensName, { fullSync: 'pending', reason });
    this.flush(lens);
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
    if (lens.inFlight) return;
    if (lens.timer) {
      clearTimeout(lens.timer);
      lens.timer = undefined;
    }
    if (lens.fullSync) {
      lens.inFlight = { kind: 'full', firstTick: lens.fullSync.tick, reason: lens.fullSync.reason };
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
        if (batch.kind === 'full') await lens.sink.requestFullSync(lens.name);
        else await lens.sink.write(lens.name, batch.changes, oldest(batch.committedAt));
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
      this.metrics.batches.inc({ lens: lens.name, outcome: 'full_sync' });
      if (!lens.fullSync) void this.saveLens(lens.name, { fullSync: 'done', reason: batch.reason });
    } else {
      const at = Date.now();
      for (const committed of batch.committedAt) lens.latency.observe((at - committed) / 1000);
      lens.counters.delivered += batch.changes.length;
      this.metrics.batchSize.observe({ lens: lens.name }, batch.changes.length);
      this.metrics.batches.inc({ lens: lens.name, outcome: 'delivered' });
    }
    this.acknowledge();
    const buffer = lens.buffer;
    if (buffer.size > 0 || lens.fullSync) {
      const waited = now() - buffer.firstAt;
      if (this.draining || lens.fullSync || buffer.size >= lens.config.maxBatch || waited >= lens.config.maxWaitMs) this.flush(lens);
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
          provenance: { source: this.sourceName, position: this.position, changes: batch.changes, response: err.details.body },
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
    this.connector.acknowledge(position);
  }

  private maybeResume(): void {
    if (this.paused && this.buffered < this.settings.maxPendingChanges / 2 && this.pendingBytes < this.settings.maxPendingBytes / 2) {
      this.paused = false;
      this.metrics.source(this.sourceName).paused = false;
      this.connector.resume();
    }
  }

  private async saveLens(name: string, value: Omit<StoredLens, 'updatedAt'>): Promise<void> {
    try {
      await this.store.put(`lens/${name}`, { ...value, updatedAt: new Date().toISOString() });
    } catch (err) {
      this.log.error({ lens: name, err: describeError(err) }, 'cannot save lens state');
    }
  }

  private async pollLag(): Promise<void> {
    try {
      Object.assign(this.metrics.source(this.sourceName), await this.connector.lag?.());
    } catch (err) {
      this.log.debug({ err: describeError(err) }, 'cannot read replication lag');
    }
  }

  // ---- control ----------------------------------------------------------------------------


  status(): LensStatus[] {
    const sourceDown = this.sourceState !== 'streaming';
    return [...this.lenses.values()].map((lens) => {
      const pending = lens.buffer.size + (lens.inFlight?.kind === 'records' ? lens.inFlight.changes.length : 0);
      lens.counters.pending = pending;
      return {
        lens: lens.name,
        source: this.sourceName,
        state: sourceDown && lens.state !== 'error' ? this.sourceState : lens.state,
        position: this.position,
        pending,
        delivered: lens.counters.delivered,
        captured: lens.counters.captured,
        dlq: lens.dlq,
        lastError: lens.state === 'streaming' && !sourceDown ? undefined : (sourceDown ? this.sourceDetail : undefined) ?? lens.lastError,
        fullSync: lens.fullSync?.reason ?? (lens.inFlight?.kind === 'full' ? lens.inFlight.reason : undefined),
        capture: this.captureMode,
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
    this.connector.pause();
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
    await this.savePosition().catch(() => {});
    await this.connector.stop();
    for (const lens of this.lenses.values()) clearTimeout(lens.timer);
    return [...this.lenses.values()].reduce((n, l) => n + l.buffer.size + (l.inFlight?.kind === 'records' ? l.inFlight.changes.length : 0), 0);
  }
}
