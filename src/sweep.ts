/**
 * Smart sync (`smartSyncInterval`): a scheduled full sweep of a lens's table that upserts the
 * rows changed since the last sweep and deletes the ids that are gone, so deletes propagate
 * without CDC. Works for every capture mode; its changes go through the lens's coalescer like
 * any other.
 *
 * Memory stays bounded whatever the table size:
 * 1. Scan: the table is read in key-order pages; each row becomes `[id, hash of the lens's
 *    columns]`, appended to one of SNAPSHOT_BUCKETS buckets (by a hash of the id) of a new
 *    snapshot version in the state store (files or a table, never the key/value map).
 * 2. Merge: bucket by bucket, the previous sweep's bucket is loaded into a map and the new
 *    bucket streamed against it: an id that is new or whose hash changed is an upsert, an id
 *    left in the map is a delete (checked once more with readByIds just before, so a row
 *    re-inserted during the sweep is not deleted). Only one bucket (table size / 256) is in
 *    memory at a time, and the merge needs no comparator for the database's key order.
 * 3. Each bucket's changes are handed to the pipeline and awaited until the sink accepted
 *    them; the new snapshot replaces the old one only after the last bucket. A crash mid-sweep
 *    leaves the old snapshot, and the next sweep starts again from it.
 *
 * The first sweep of a lens has no previous snapshot: it upserts every row (sinks skip
 * unchanged content) and can delete nothing it has not seen.
 *
 * Polled ids: a row polled after one sweep and deleted before the next is in no snapshot, yet
 * the sink has it. For connectors blind to deletes (polling), the pipeline reports every id it
 * delivered (`noteDelivered`); the sweeper keeps them in a journal (in memory, written to the
 * snapshot store every JOURNAL_FLUSH ids and on stop) and the next sweep treats journaled ids
 * like ids of the previous snapshot: gone from the table, they are deleted. Ids delivered
 * since the last journal write are lost if the daemon crashes.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from './errors.js';
import { retry } from './retry.js';
import { SNAPSHOT_BUCKETS, type Logger, type RecordChange, type RowReader, type SnapshotEntry, type StateStore } from './types.js';

/** Rows read per page of the scan. */
const PAGE_SIZE = 2000;
/** Entries buffered across buckets before they are appended to the snapshot. */
const FLUSH_ENTRIES = 50_000;
/** Ids per readByIds when checking delete candidates. */
const CHECK_CHUNK = 1000;
/** Buckets whose changes may wait for delivery at once (bounds what a sweep buffers). */
const EMITS_IN_FLIGHT = 2;
/** Journaled ids held in memory before they are written to the snapshot store. */
const JOURNAL_FLUSH = 100_000;
/** The hash of a journaled id in the merge: the sink has it, its content is unknown. */
const JOURNALED = '';
/** A failed sweep is tried again after a jittered delay from this... */
const RETRY_INITIAL_MS = 1000;
/** ...up to this (or smartSyncInterval when shorter). */
const RETRY_MAX_MS = 300_000;

/** A lens's sweeps, for status and metrics. */
export interface SweepProgress {
  state: 'waiting' | 'scanning' | 'merging' | 'paused' | 'error';
  /** Rows read by the sweep in progress (or the last one). */
  rows: number;
  /** Rows the last complete sweep saw: the scan's expected total. */
  total?: number;
  upserts: number;
  deletes: number;
  /** Complete sweeps since the daemon started. */
  completed: number;
  lastFinishedAt?: string;
  nextAt?: string;
  lastError?: string;
}

/** What `sweep/<lens>` keeps in the state store. */
interface StoredSweep {
  finishedAt?: string;
  rows?: number;
  /** Journal parts `journal-<lens>-<n>` for n in [from, to) wait for the next sweep. */
  journal?: { from: number; to: number };
}

export interface SweeperOptions {
  lens: string;
  intervalMs: number;
  openReader: () => Promise<RowReader>;
  store: StateStore;
  /** Queues changes for the lens; resolves once the sink accepted them. */
  emit: (changes: RecordChange[]) => Promise<void>;
  log: Logger;
}

export class Sweeper {
  readonly progress: SweepProgress = { state: 'waiting', rows: 0, upserts: 0, deletes: 0, completed: 0 };
  private reader: RowReader | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private paused = false;
  private stopping = false;
  /** Aborted by `stop()`: ends the wait before a failed sweep is tried again. */
  private readonly stopSignal = new AbortController();
  /** How long the last sweep's scan took (the rest is the merge), for the log. */
  private scanMs = 0;
  private unpaused: { promise: Promise<void>; resolve: () => void } | undefined;
  private stored: StoredSweep = {};
  /** Ids delivered since the journal was last written. */
  private journal = new Set<string>();
  private journalWrites: Promise<void> = Promise.resolve();

  constructor(private readonly options: SweeperOptions) {}

  private get snapshotName(): string {
    return `sweep-${this.options.lens}`;
  }

  /** Schedules the first sweep: `smartSyncInterval` after the last one finished, or now. */
  async start(): Promise<void> {
    const last = (this.stored = (await this.options.store.get<StoredSweep>(`sweep/${this.options.lens}`)) ?? {});
    this.progress.total = last.rows;
    this.progress.lastFinishedAt = last.finishedAt;
    this.schedule(last.finishedAt ? Math.max(0, Date.parse(last.finishedAt) + this.options.intervalMs - Date.now()) : 0);
  }

  /** Ids a connector blind to deletes delivered: the next sweep checks they still exist. */
  noteDelivered(ids: string[]): void {
    for (const id of ids) this.journal.add(id);
    if (this.journal.size >= JOURNAL_FLUSH) {
      void this.writeJournal().catch((err) => this.options.log.warn({ lens: this.options.lens, err: describeError(err) }, 'cannot write the smart sync journal'));
    }
  }

  /** Writes the journaled ids as the next journal part; parts are written one at a time. */
  private writeJournal(): Promise<void> {
    if (this.journal.size === 0) return this.journalWrites;
    const ids = [...this.journal];
    this.journal.clear();
    const write = async () => {
      try {
        const part = this.stored.journal?.to ?? 0;
        const writer = await this.options.store.snapshots.write(this.journalName(part));
        const buckets: SnapshotEntry[][] = Array.from({ length: SNAPSHOT_BUCKETS }, () => []);
        for (const id of ids) buckets[bucketOf(id)].push([id, JOURNALED]);
        for (let b = 0; b < SNAPSHOT_BUCKETS; b++) await writer.append(b, buckets[b]);
        await writer.commit();
        await this.save({ journal: { from: this.stored.journal?.from ?? 0, to: part + 1 } });
      } catch (err) {
        for (const id of ids) this.journal.add(id); // kept for the next write
        throw err;
      }
    };
    this.journalWrites = this.journalWrites.catch(() => {}).then(write);
    return this.journalWrites;
  }

  private journalName(part: number): string {
    return `journal-${this.options.lens}-${part}`;
  }

  private async save(value: StoredSweep): Promise<void> {
    this.stored = { ...this.stored, ...value };
    await this.options.store.put(`sweep/${this.options.lens}`, this.stored);
  }

  /** Starts a sweep now (or right after the one in progress). */
  runNow(): void {
    if (this.stopping) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = this.sweep().finally(() => (this.running = undefined));
  }

  /** A paused sweeper starts no sweep; one in progress waits before its next page. */
  setPaused(paused: boolean): void {
    this.paused = paused;
    if (paused) {
      if (!this.unpaused) {
        let resolve!: () => void;
        const promise = new Promise<void>((r) => (resolve = r));
        this.unpaused = { promise, resolve };
      }
      if (!this.running) this.progress.state = 'paused';
    } else {
      this.unpaused?.resolve();
      this.unpaused = undefined;
      if (this.progress.state === 'paused') this.progress.state = 'waiting';
      if (this.timer === undefined && !this.running) this.runNow();
    }
  }

  /** Stops sweeping; a sweep in progress ends at its next step, without committing. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.stopSignal.abort();
    clearTimeout(this.timer);
    this.unpaused?.resolve();
    await this.running;
  }

  /** After the last delivery: writes the journal and closes the reader. */
  async close(): Promise<void> {
    await this.writeJournal().catch((err) => this.options.log.warn({ lens: this.options.lens, err: describeError(err) }, 'cannot write the smart sync journal'));
    await this.reader?.close().catch(() => {});
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopping) return;
    this.progress.nextAt = new Date(Date.now() + delayMs).toISOString();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.paused) this.runNow();
    }, delayMs);
  }

  /** Sweeps, trying a failed sweep again (with backoff) until it completes or the sweeper stops. */
  private async sweep(): Promise<void> {
    const { lens, log } = this.options;
    const progress = this.progress;
    try {
      const started = Date.now();
      const done = await retry(() => this.attempt(), {
        initialMs: RETRY_INITIAL_MS,
        maxMs: Math.min(this.options.intervalMs, RETRY_MAX_MS),
        retriable: () => !this.stopping, // a sweep is safe to repeat, whatever failed
        signal: this.stopSignal.signal,
        onRetry: (err, _attempt, delayMs) => {
          Object.assign(progress, { state: 'error', lastError: describeError(err), nextAt: new Date(Date.now() + delayMs).toISOString() });
          log.warn({ lens, err: progress.lastError, retryInMs: Math.round(delayMs) }, 'smart sync sweep failed; trying again');
        },
      });
      if (done) {
        const finishedAt = new Date().toISOString();
        await this.save({ finishedAt, rows: progress.rows });
        Object.assign(progress, { state: 'waiting', total: progress.rows, lastFinishedAt: finishedAt });
        progress.completed++;
        log.info({ lens, rows: progress.rows, upserts: progress.upserts, deletes: progress.deletes, ms: Date.now() - started, scanMs: this.scanMs }, 'smart sync sweep finished');
      }
      this.schedule(this.again ? 0 : this.options.intervalMs);
    } catch (err) {
      // Only when stopping: the sweep (or its retry) ended without committing.
      Object.assign(progress, { state: 'error', lastError: describeError(err) });
    } finally {
      this.again = false;
      if (this.paused && progress.state !== 'error') progress.state = 'paused';
    }
  }

  /** One attempt at a sweep; false when stopped before the end. */
  private async attempt(): Promise<boolean> {
    this.reader ??= await this.options.openReader();
    Object.assign(this.progress, { state: 'scanning', rows: 0, upserts: 0, deletes: 0, lastError: undefined, nextAt: undefined });
    this.options.log.info({ lens: this.options.lens }, 'smart sync sweep started');
    return this.sweepOnce(this.reader);
  }

  /** One sweep; false when stopped before the end (the old snapshot stays). */
  private async sweepOnce(reader: RowReader): Promise<boolean> {
    const { store } = this.options;
    const progress = this.progress;
    // The journal so far belongs to this sweep; ids delivered from now on, to the next one.
    await this.writeJournal();
    const journal = this.stored.journal ?? { from: 0, to: 0 };
    const writer = await store.snapshots.write(this.snapshotName);
    try {
      // 1. Scan the table into the new snapshot's buckets.
      const buffers: SnapshotEntry[][] = Array.from({ length: SNAPSHOT_BUCKETS }, () => []);
      let buffered = 0;
      const flush = async () => {
        for (let b = 0; b < SNAPSHOT_BUCKETS; b++) {
          if (buffers[b].length === 0) continue;
          await writer.append(b, buffers[b]);
          buffers[b] = [];
        }
        buffered = 0;
      };
      const scanStart = Date.now();
      // The next page is read while this one is hashed and written.
      let next = reader.page({ limit: PAGE_SIZE });
      for (;;) {
        const rows = await next;
        const more = rows.length === PAGE_SIZE;
        if (more) next = reader.page({ after: rows[rows.length - 1].id, limit: PAGE_SIZE });
        for (const { id, row } of rows) {
          buffers[bucketOf(id)].push([id, rowHash(row)]);
        }
        buffered += rows.length;
        progress.rows += rows.length;
        if (buffered >= FLUSH_ENTRIES) await flush();
        if (!more) break;
        if (!(await this.proceed())) {
          next.catch(() => {});
          return false;
        }
      }
      await flush();
      this.scanMs = Date.now() - scanStart;

      // 2. Merge bucket by bucket against the previous snapshot. Up to EMITS_IN_FLIGHT buckets'
      // changes wait for delivery while the next bucket is merged.
      progress.state = 'merging';
      const emitted: Array<Promise<void>> = [];
      for (let b = 0; b < SNAPSHOT_BUCKETS; b++) {
        if (emitted.length >= EMITS_IN_FLIGHT) await emitted.shift();
        if (!(await this.proceed())) return false;
        const previous = new Map(await store.snapshots.read(this.snapshotName, b));
        for (let part = journal.from; part < journal.to; part++) {
          for (const [id] of (await store.snapshots.read(this.journalName(part), b)) ?? []) if (!previous.has(id)) previous.set(id, JOURNALED);
        }
        const changes: RecordChange[] = [];
        for (const [id, hash] of await writer.read(b)) {
          const before = previous.get(id);
          // A journaled id was delivered by the connector, which delivers its later updates too.
          if (before !== hash && before !== JOURNALED) changes.push({ id, action: 'upsert' });
          previous.delete(id);
        }
        const upserts = changes.length;
        const gone = [...previous.keys()];
        previous.clear();
        for (let i = 0; i < gone.length; i += CHECK_CHUNK) {
          const chunk = gone.slice(i, i + CHECK_CHUNK);
          const back = await reader.readByIds(chunk);
          for (const id of chunk) if (!back.has(id)) changes.push({ id, action: 'delete' });
        }
        if (changes.length > 0) emitted.push(this.options.emit(changes));
        progress.upserts += upserts;
        progress.deletes += changes.length - upserts;
      }
      await Promise.all(emitted);
      // Stopping releases a wait for delivery: only a sweep whose changes all went out commits.
      if (this.stopping) return false;
      await writer.commit();
      await this.save({ journal: { from: journal.to, to: this.stored.journal?.to ?? journal.to } });
      for (let part = journal.from; part < journal.to; part++) await store.snapshots.remove(this.journalName(part));
      return true;
    } catch (err) {
      await writer.abort().catch(() => {});
      throw err;
    }
  }

  /** Waits while paused; false once stopping. */
  private async proceed(): Promise<boolean> {
    while (this.paused && !this.stopping) await this.unpaused?.promise;
    if (this.stopping) return false;
    await sleep(0); // let deliveries and checkpoints run between pages
    return true;
  }
}

/** FNV-1a of the id, modulo the bucket count. */
export function bucketOf(id: string): number {
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  return (h >>> 0) % SNAPSHOT_BUCKETS;
}

/** 96 bits of SHA-1 over the row's columns: equal rows, equal hash. */
function rowHash(row: Record<string, unknown>): string {
  return createHash('sha1').update(JSON.stringify(row)).digest('base64').slice(0, 16);
}
