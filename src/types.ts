/**
 * The interfaces between Tributary's stages. A source connector turns a database's change
 * stream into `SourceChange`s and checkpoints; the pipeline coalesces them per lens and hands
 * batches to a `Sink`; once every change at or before a checkpoint is accepted, the pipeline
 * acknowledges that checkpoint's position back to the connector. Durable bits (positions,
 * lens flags, dead letters, status) live in a `StateStore`.
 */

import type { LensConfig } from './config/types.js';

export type Action = 'upsert' | 'delete';

/** One entry of a records-mode batch, exactly as it travels to a sink. */
export interface RecordChange {
  id: string;
  action: Action;
  /** When the source committed it, ms since the epoch, where known (freshness, payload timestamps). */
  committedAt?: number;
  /**
   * The row's columns when the source carried them (a DMS `data`, a Debezium `after`), kept
   * through coalescing (the last one per id), for payload sinks, which then need not re-read it.
   */
  row?: Record<string, unknown>;
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
  /**
   * The row's columns when the source carried them (stream sources: a DMS record's `data`, a
   * Debezium event's `after`); null for a delete. Sinks that take rows need no row reader then.
   */
  row?: Record<string, unknown> | null;
}

/** A source record the connector could not turn into changes (see `SourceHandler.reject`). */
export interface RejectedRecord {
  /** The lens whose table the record names; undefined when no lens could be told (not JSON, no table). */
  lens?: string;
  /** Why it was not understood, e.g. `the record is not JSON`. */
  reason: string;
  /** The record as it arrived (text), for the dead-letter queue. */
  raw: string;
  /** Where it is in the source, e.g. `shardId-000000000001@49680…` (a shard and sequence number). */
  where: string;
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
  /**
   * Changes of the lens were lost and the user chose to decide when to re-read it (e.g. a
   * purged binlog position with `onPurgedPosition: error`): the lens shows `error` with
   * `reason`, across restarts, until a full sync of it is accepted (`tributary ingest LENS
   * --mode full`). Streaming goes on meanwhile.
   */
  fullSyncOwed(lens: string, reason: string): void;
  /**
   * A row change of `table` that no lens claims although the table could belong to one (a
   * partition or inheritance child of a lens table, a table in the lens's publication): the
   * pipeline counts it (`tributary_changes_unmatched_total{source,table}`) and warns once per
   * table with `advice`, what the user should do. Never call it for tables that merely share a
   * database with the lenses.
   */
  unmatched(table: string, advice: string): void;
  /**
   * A record the connector cannot understand (not JSON, no table, no key): it goes to the
   * dead-letter queue with its raw text and place, and reading goes on. Belongs to no checkpoint.
   */
  reject(record: RejectedRecord): void;
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
   * `saved` is the position the pipeline last persisted for this source (`position/<source>`,
   * the newest acknowledged one), undefined on a first start. Connectors whose source keeps
   * its own place (a replication slot) may ignore it; others (polling cursors) resume from it.
   */
  start(handler: SourceHandler, saved?: Position): Promise<{ fresh: boolean }>;
  /** Every change at or before `position` has been delivered: the source may forget it. */
  acknowledge(position: Position): void;
  /** Stop reading (backpressure); keepalives still go out. */
  pause(): void;
  resume(): void;
  /**
   * Source-specific gauges for metrics and status: replication lag and retained WAL (bytes);
   * for streams, how far the slowest part is behind the stream's tip (ms) and the records of
   * tables no lens reads, skipped since start.
   */
  lag?(): Promise<{ lagBytes?: number; retainedBytes?: number; lagMs?: number; skippedRecords?: number; lagMessages?: number }>;
  /** Streams read in parts (Kinesis shards): each part's lag behind the tip, ms, for status. */
  partLag?(): Record<string, number>;
  /**
   * Streams read by offsets (Kafka partitions this process owns): messages between each part's
   * committed offset and its end, as of the last `lag()`, for status.
   */
  partMessagesBehind?(): Record<string, number>;
  /** Connectors that read on a schedule (polling) have this capability; streams do not. */
  readonly scheduled?: ScheduledReading;
  /**
   * Resolves once the connector stopped reading for good after `start` resolved: with the
   * permanent error (already reported as state `error` with its message), or with undefined
   * after `stop()`. Never rejects. The daemon may await it to fail /healthz or exit; connectors
   * that run through the supervisor (src/supervisor.ts) pass on `Supervisor.stopped`.
   */
  readonly stopped?: Promise<Error | undefined>;
  stop(): Promise<void>;
}

/**
 * Scheduled reading (polling): the connector reads each lens on a timer instead of following a
 * stream. Such a connector cannot see deletes: the pipeline journals the ids it delivers so the
 * next smart sync sweep deletes those that are gone.
 */
export interface ScheduledReading {
  /** An operator paused or resumed one lens (`tributary pause|resume`): a paused lens is not read. */
  setLensPaused(lens: string, paused: boolean): void;
  /** Reads the lens now (`tributary ingest LENS --mode incremental`); false when it is not scheduled here. */
  runNow(lens: string): boolean;
  /** The part of a position that concerns one lens (its cursor), for status. */
  lensPosition(position: Position, lens: string): string | undefined;
}

/** What every connector factory receives. */
export interface ConnectorContext {
  sourceName: string;
  /** The lenses reading from this source, with their tables and keys. */
  lenses: Array<{ name: string; table: string; primaryKey?: string[]; config: LensConfig }>;
  log: Logger;
  /** Where a factory that probes the source first (`capture: auto`) reports its progress and choice. */
  report: Pick<SourceHandler, 'state' | 'capture'>;
  /** Aborted when the daemon stops: a factory still probing gives up. */
  signal?: AbortSignal;
}

/**
 * A sink: where batches go. Implementations throw `SinkError`s classified by kind; the
 * pipeline owns retrying, dead-lettering and ordering (one batch per lens in flight).
 */
export interface Sink {
  /**
   * Deliver one records-mode batch (≤ MAX_BATCH changes, each id once with its last action).
   * Resolves once the sink accepted it.
   */
  write(lens: string, changes: RecordChange[]): Promise<void>;
  /**
   * Optional, for sinks that read rows: `changes` is the lens's next batch, passed to `write`
   * (the same array) once the batch in flight is accepted. The sink may start reading now. A
   * batch prepared may never be written (the daemon stopped first): nothing may depend on it.
   */
  prepare?(lens: string, changes: RecordChange[]): void;
  /** Ask the sink to re-read the whole lens (first start, truncate). */
  requestFullSync(lens: string): Promise<void>;
  /**
   * Ask the sink to read the rows changed since its own cursor (`mode: incremental`), for
   * `tributary ingest LENS --mode incremental` on lenses Tributary does not poll itself.
   */
  requestIncrementalSync(lens: string): Promise<void>;
  /** What the sink knows of a lens beyond delivery, for `tributary status` (the worker's index). */
  lensStatus?(lens: string): object | undefined;
  close(): Promise<void>;
}

/** The most changes one batch (and one ingest request) carries: the ingest APIs' limit. */
export const MAX_BATCH = 10_000;

/** The worker's rows read, embedded and written per step, unless `worker.readBatch` says otherwise. */
export const READ_BATCH = 1000;

export interface DeadLetter {
  id: string;
  lens: string;
  reason: string;
  error: string;
  attempts: number;
  firstSeen: string;
  lastSeen: string;
  /** Where it came from: source name, position, and the changes themselves. */
  provenance: {
    source?: string;
    position?: Position;
    changes?: RecordChange[];
    response?: string;
    /** A source record the connector could not understand, as it arrived (`position` is where it was). */
    record?: string;
  };
}

/**
 * Durable state. Keys are plain strings (`position/<source>`, `lens/<name>`, `status`);
 * values are JSON. `put` is durable when it resolves.
 */
export interface StateStore {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
  /**
   * Merges `fields` into the object under `key` (created when missing) in one step: replicas
   * sharing the store may each set their own fields of one key (`lens/<name>`: one saves a
   * full sync's state, another an operator's pause) without undoing each other's.
   */
  patch(key: string, fields: Record<string, unknown>): Promise<void>;
  addDeadLetter(letter: Omit<DeadLetter, 'id'>): Promise<DeadLetter>;
  /**
   * Dead letters, oldest first: all of them, or one lens's; with `page`, at most `limit` of
   * them after the letter with id `after` (ids sort in the order letters were added).
   */
  listDeadLetters(lens?: string, page?: { after?: string; limit: number }): Promise<DeadLetter[]>;
  removeDeadLetters(ids: string[]): Promise<number>;
  /** How many dead letters each of these lenses has (0 for none). */
  countDeadLetters(lenses: string[]): Promise<Map<string, number>>;
  /** The keys that start with `prefix`, in no particular order (e.g. `status/` for every replica's status). */
  keys(prefix: string): Promise<string[]>;
  /** Removes a key; nothing happens when it does not exist. */
  delete(key: string): Promise<void>;
  /**
   * Takes the lease `name` (e.g. `source/app`): while it is held, no other process sharing this
   * store holds it, so with `replicas: 2` exactly one replica reads each source and the other
   * stands by. Resolves once this process holds it; while another process does, calls
   * `waiting` once and keeps trying (every second or two) until it gets it or `signal` aborts
   * (then it rejects with the abort reason).
   *
   * - postgres: `pg_try_advisory_lock` on a dedicated session. The server releases the lock
   *   when that session ends, so a replica that dies (even kill -9) hands over within seconds.
   * - embedded: the directory lock already makes this process the only one: resolves at once.
   */
  lease(name: string, options?: { signal?: AbortSignal; waiting?: () => void }): Promise<Lease>;
  /** Large id lists of smart sync sweeps, kept outside the key/values (see SnapshotStore). */
  readonly snapshots: SnapshotStore;
  /**
   * Operator requests from the CLI to the running daemon. `sendRequest` works on read-only
   * stores too (the CLI opens the store beside the daemon); it returns the request's id.
   */
  sendRequest(request: ControlRequest): Promise<string>;
  /** True while the daemon has not yet taken the request. */
  requestPending(id: string): Promise<boolean>;
  /**
   * The daemon: the requests sent so far for these lenses (those it reads), oldest first, each
   * returned once, with their ids; requests of other lenses stay for the replica that reads
   * them. Expired requests of any lens are taken too, so they do not pile up.
   */
  takeRequests(lenses: string[]): Promise<Array<{ id: string; request: ControlRequest }>>;
  close(): Promise<void>;
}

/** A lease held by this process (see `StateStore.lease`). */
export interface Lease {
  /**
   * Resolves (never rejects) if the lease was lost without `release`: the store's session
   * dropped, so another process may hold it now and this one must stop reading.
   */
  readonly lost: Promise<Error>;
  release(): Promise<void>;
}

/** What `tributary pause|resume|ingest` asks the running daemon to do. */
export type ControlRequest = (
  | { kind: 'pause' | 'resume'; lens: string }
  | { kind: 'ingest'; lens: string; mode: 'full' | 'incremental' }
  | { kind: 'ingest'; lens: string; mode: 'records'; changes: RecordChange[] }
  /** Dead letters of a lens with a hosted sink: delivered again, or removed (all, or `ids`). */
  | { kind: 'dlq'; lens: string; action: 'replay' | 'drop'; ids?: string[] }
) & {
  /** ms since the epoch: a daemon that finds the request later ignores it (the CLI gave up). */
  expiresAt?: number;
};

/** A request the CLI gave up waiting for (its `expiresAt` passed): never applied. */
export function isExpired(request: ControlRequest, now = Date.now()): boolean {
  return request.expiresAt !== undefined && request.expiresAt < now;
}

/**
 * What the daemon answers a request with, under `replies/<request id>` in the state store,
 * once the request took effect (or could not): `tributary pause|resume|ingest|dlq` print it.
 */
export interface ControlReply {
  ok: boolean;
  message: string;
  at: string;
}

/** One entry of a sweep snapshot: a row id and the hash of the lens's columns of that row. */
export type SnapshotEntry = [id: string, hash: string];

/**
 * Sweep snapshots: the ids (and row hashes) a lens's last smart sync sweep saw, split into
 * `SNAPSHOT_BUCKETS` buckets by a hash of the id, so a sweep compares one bucket at a time and
 * its memory stays bounded by the table size divided by the bucket count. A snapshot is
 * written whole under a new version and replaces the previous one only on `commit`.
 */
export interface SnapshotStore {
  /** Starts writing a new version of snapshot `name`; an uncommitted earlier attempt is discarded. */
  write(name: string): Promise<SnapshotWriter>;
  /** The entries of one bucket of the committed snapshot `name`, or undefined if there is none. */
  read(name: string, bucket: number): Promise<SnapshotEntry[] | undefined>;
  /** Deletes snapshot `name` (committed or not); no error if it does not exist. */
  remove(name: string): Promise<void>;
}

export interface SnapshotWriter {
  /** Adds entries to a bucket; durable only after `commit`. */
  append(bucket: number, entries: SnapshotEntry[]): Promise<void>;
  /** The entries written so far to one bucket. */
  read(bucket: number): Promise<SnapshotEntry[]>;
  /** Makes this version the committed snapshot, replacing the previous one atomically. */
  commit(): Promise<void>;
  /** Drops this version. */
  abort(): Promise<void>;
}

/** Buckets per sweep snapshot: 10 million rows are ~40,000 ids a bucket. */
export const SNAPSHOT_BUCKETS = 256;

/**
 * Reads a lens's rows from its source database: the worker re-reads rows by id, and the
 * scheduled paths (polling cursors, smart sync sweeps) page through the table. One
 * implementation per database, `connectors/<source>/reader.ts`, opened through its spec.
 */
export interface RowReader {
  /** The current rows of these ids (missing ids are rows that are gone). */
  readByIds(ids: string[]): Promise<Map<string, Record<string, unknown>>>;
  /**
   * Only on a reader that builds payload JSON (RowReaderOptions.payloadFields): the payload
   * JSON of each of `ids`, in their order ('' for a row that is gone), and with a
   * changeTrackingColumn its value for each, as readByIds would give it. All of it comes as one
   * result row, so the daemon parses no row and keeps no object per row.
   */
  payloadsByIds?(ids: string[]): Promise<{ json: string[]; tracking?: unknown[] }>;
  /**
   * One page of the table in key order after `after` (an id), for full syncs; `[]` at the end.
   * With `changedSince`, only rows whose changeTrackingColumn is past that cursor, keyset on
   * (column, key), for incremental syncs and polling; `value` undefined: from the first row
   * (rows whose column is NULL are never returned). Each row's `cursor` is its column as text.
   */
  page(options: { after?: string; limit: number; changedSince?: { value?: string; id?: string } }): Promise<Array<{ id: string; row: Record<string, unknown>; cursor?: string }>>;
  /**
   * Checks the lens's changeTrackingColumn for polling: whether it exists, and whether an
   * index serves the poll's ORDER BY (column, key); `createIndex` is the statement to run if not.
   */
  describeChangeTracking?(): Promise<{ exists: boolean; indexed: boolean; createIndex: string }>;
  /**
   * Rows for the worker's Query endpoint (`POST /v1/query/:lens`): equality `where`, ordered by
   * `orderBy` and then the key, after a keyset position, at most `limit`. Column names were
   * checked against the lens's columns by the caller and are checked again here; values are
   * only ever parameters (src/table-query.ts builds the SQL of both SQL sources).
   */
  query(query: TableQuery): Promise<TableQueryResult>;
  close(): Promise<void>;
}

/** One ordering column of a TableQuery. */
export interface QueryOrder {
  column: string;
  dir: 'asc' | 'desc';
}

export interface TableQuery {
  /** Column → value; `null` matches NULL. */
  where: Record<string, string | number | boolean | null>;
  /** Ordering columns; the key follows (ascending) as the tiebreaker. NULLs sort as Postgres does: last ascending, first descending. */
  orderBy: QueryOrder[];
  /** Start after this row: its orderBy values as text (null for NULL) and its id. */
  after?: { values: Array<string | null>; id: string };
  /** Rows to skip first (without `after`). */
  offset: number;
  limit: number;
}

export interface TableQueryResult {
  /** Each row: its id, its columns (the key's and the lens's), and its orderBy values as text for the next cursor. */
  rows: Array<{ id: string; row: Record<string, unknown>; sort: Array<string | null> }>;
  /** Rows matching `where`, all pages together. */
  total: number;
}

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: object): Logger;
}
