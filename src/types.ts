/**
 * The interfaces between Tributary's stages. A source connector turns a database's change
 * stream into `SourceChange`s and checkpoints; the pipeline coalesces them per lens and hands
 * batches to a `Sink`; once every change at or before a checkpoint is accepted, the pipeline
 * acknowledges that checkpoint's position back to the connector. Durable bits (positions,
 * lens flags, dead letters, status) live in a `StateStore`.
 */

export type Action = 'upsert' | 'delete';

/** One entry of a records-mode batch, exactly as it travels to a sink. */
export interface RecordChange {
  id: string;
  action: Action;
}

/**
 * A source's resumable place, serialised as text (Postgres: an LSN like `0/16B3748`).
 * Opaque outside its connector.
 */
export type Position = string;

/** One row change as a connector reports it. */
export interface SourceChange {
  lens: string;
  /** The primary key as text: `42`, or a JSON array for composite keys: `[7,"eu"]`. */
  id: string;
  action: Action;
  /** When the source committed the change, ms since the epoch (for latency metrics). */
  committedAt: number;
}

/** What a connector calls as it reads. All calls are synchronous and cheap. */
export interface SourceHandler {
  /** A row change. Belongs to the next checkpoint. */
  change(change: SourceChange): void;
  /**
   * Every change reported so far is at or before `position`: once they are all delivered,
   * `position` may be acknowledged. Called at transaction ends and on idle heartbeats.
   */
  checkpoint(position: Position): void;
  /** The lens's table was truncated (or is otherwise unknowable): the sink needs a full sync. */
  resync(lens: string, reason: string): void;
  /** Connection state for status: `streaming`, `reconnecting`, `standby`, `error`. */
  state(state: SourceState, detail?: string): void;
  /**
   * The capture mode the connector runs (`logical`, `trigger`, `poll`) and why it was chosen,
   * for logs and `tributary status`. Called by `capture: auto` once it has decided.
   */
  capture(mode: string, reason: string): void;
}

export type SourceState = 'connecting' | 'streaming' | 'reconnecting' | 'standby' | 'error';

/**
 * A source connector: one connection to one database or stream, feeding the lenses that
 * read from it. Connectors never import the metrics library or the sinks.
 */
export interface SourceConnector {
  /**
   * Validates the source (privileges, settings, keys), creates what it needs (slot,
   * publication) and starts streaming from the last acknowledged position. Resolves once
   * streaming has begun; a setup problem rejects with a SourceSetupError. Connection losses
   * after that are retried inside the connector and reported through `handler.state`.
   * `fresh` is true when the source had no resumable position (a slot created just now):
   * anything that happened before must come from a full sync.
   */
  start(handler: SourceHandler): Promise<{ fresh: boolean }>;
  /** Every change at or before `position` has been delivered: the source may forget it. */
  acknowledge(position: Position): void;
  /** Stop reading (backpressure); keepalives still go out. */
  pause(): void;
  resume(): void;
  /** Source-specific gauges for metrics and status (replication lag, retained WAL). */
  lag?(): Promise<{ lagBytes?: number; retainedBytes?: number }>;
  stop(): Promise<void>;
}

/** What every connector factory receives. */
export interface ConnectorContext {
  sourceName: string;
  /** The lenses reading from this source, with their tables and keys. */
  lenses: Array<{ name: string; table: string; primaryKey?: string[]; changeTrackingColumn?: string }>;
  log: Logger;
}

/**
 * A sink: where batches go. Implementations throw `SinkError`s classified by kind; the
 * pipeline owns retrying, dead-lettering and ordering (one batch per lens in flight).
 */
export interface Sink {
  /**
   * Deliver one records-mode batch (≤ 10,000 changes). Resolves once the sink accepted it.
   * `committedAt`: the oldest source commit time in the batch (ms), for freshness metrics.
   */
  write(lens: string, changes: RecordChange[], committedAt?: number): Promise<void>;
  /** Ask the sink to re-read the whole lens (first start, truncate). */
  requestFullSync(lens: string): Promise<void>;
  close(): Promise<void>;
}

export interface DeadLetter {
  id: string;
  lens: string;
  reason: string;
  error: string;
  attempts: number;
  firstSeen: string;
  lastSeen: string;
  /** Where it came from: source name, position, and the changes themselves. */
  provenance: { source?: string; position?: Position; changes?: RecordChange[]; response?: string };
}

/**
 * Durable state. Keys are plain strings (`position/<source>`, `lens/<name>`, `status`);
 * values are JSON. `put` is durable when it resolves.
 */
export interface StateStore {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
  addDeadLetter(letter: Omit<DeadLetter, 'id'>): Promise<DeadLetter>;
  listDeadLetters(lens?: string): Promise<DeadLetter[]>;
  removeDeadLetters(ids: string[]): Promise<number>;
  close(): Promise<void>;
}

/**
 * Reads a lens's rows from its source database: the worker re-reads rows by id, and the
 * scheduled paths (polling cursors, smart sync sweeps) page through the table. One
 * implementation per database, in src/readers/.
 */
export interface RowReader {
  /** The current rows of these ids (missing ids are rows that are gone). */
  readByIds(ids: string[]): Promise<Map<string, Record<string, unknown>>>;
  /**
   * One page of the table in key order after `after` (an id), for full syncs; `[]` at the end.
   * With `changedSince`, only rows whose changeTrackingColumn is past that cursor, keyset on
   * (column, key), for incremental syncs.
   */
  page(options: { after?: string; limit: number; changedSince?: { value: string; id?: string } }): Promise<Array<{ id: string; row: Record<string, unknown>; cursor?: string }>>;
  close(): Promise<void>;
}

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: object): Logger;
}
