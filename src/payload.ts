/**
 * Rows for ids: the stage every payload sink (seyn, psykhe) sends through. Tributary's ids
 * travel; a payload sink needs each id's current row (docs/architecture.md, "Ids travel; rows
 * are read when needed"):
 *
 * - **What is sent.** A lens's `payload` picks the columns (a list) or maps them
 *   (`{ outField: column }`); without it, every column. Values keep their types: numbers as JSON
 *   numbers when exact (else their text), times as ISO 8601 UTC (years 1–9999; others as their
 *   text), json/jsonb as JSON, bytea as base64 (`encodeValue`; the reader, opened with
 *   `payloadValues`, does the database side).
 *   A reader may build the payload's JSON itself (Postgres does, for the common column types:
 *   connectors/postgres/payload-json.ts); the stage then passes that text on as it is.
 * - **Where rows come from.** From the change when the source carried one (`RecordChange.row`),
 *   else read through the lens's row reader, one query per slice of at most `READ_SLICE` ids.
 *   Slices shrink when rows are wide (about `SLICE_BYTES` of values a slice), so the rows in
 *   flight stay bounded in bytes as well as in count. An id whose row is gone is the sink's
 *   delete.
 * - **Full syncs.** A payload sink's first start (and a truncate) is a full sync Tributary runs
 *   itself: the table in key order, a page at a time (`scan`). `fullSync` saves its cursor in
 *   the state store (`fullsync/<sink>/<lens>`) after every page the sink accepted, so a crash
 *   resumes where it stopped; progress shows in `status` and in a log line every
 *   `PROGRESS_LOG_MS`.
 * - **Checked at start.** `open()` opens every lens's reader, whose column check names the
 *   lens and any payload column that does not exist.
 */
import type { LensConfig } from './config/types.js';
import { SinkError } from './errors.js';
import type { SinkContext } from './plugins.js';
import { PAYLOAD_JSON, type Row } from './rows.js';
import type { RecordChange, RowReader } from './types.js';

/** Ids read with one query; also the rows of one full sync page. */
export const READ_SLICE = 1000;
/** About this many bytes of payload JSON per slice (or page): wide rows make smaller slices. */
export const SLICE_BYTES = 8 * 1024 * 1024;
/** Slices a batch has in flight (read, or being read) ahead of the one its sink handles. */
const READ_AHEAD = 3;
/** A lens's first slice, before its rows' width is known. */
const FIRST_SLICE = 100;
/** How often a running full sync logs its progress. */
const PROGRESS_LOG_MS = 10_000;

/** One change with what a payload sink sends for it. */
export interface PayloadRecord {
  change: RecordChange;
  /** The payload's JSON; undefined when the change is a delete or the row is gone. */
  json?: string;
  /** The row as read (its columns as read, or only its changeTrackingColumn when the reader built the JSON), when there is one. */
  row?: Row;
}

/** A full sync's progress, for `tributary status` (`lensStatus`). */
export interface FullSyncProgress {
  state: 'running' | 'done';
  /** Rows sent so far (including those sent before a restart it resumed from). */
  rows: number;
  startedAt: string;
  finishedAt?: string;
}

/** What a resumable full sync keeps under `fullsync/<sink>/<lens>`. */
interface FullSyncCursor {
  after?: string;
  rows: number;
  startedAt: string;
}

/** A number when the decimal text reads back the same as a JSON number, else the text. */
export function exactNumber(text: string): number | string {
  const n = Number(text);
  if (!Number.isFinite(n)) return text;
  const printed = String(n);
  return printed === text || printed === withoutTrailingZeros(text) || printed === canonicalDecimal(text) ? n : text;
}

/** `12.50` → `12.5`, `3.00` → `3`: the common case of canonicalDecimal, without regexes. */
function withoutTrailingZeros(text: string): string {
  if (!text.includes('.')) return text;
  let end = text.length;
  while (text.charCodeAt(end - 1) === 48) end--; // '0'
  if (text.charCodeAt(end - 1) === 46) end--; // '.'
  return text.slice(0, end);
}

/** `-007.50` → `-7.5`: the decimal as JavaScript prints an exact number. */
function canonicalDecimal(text: string): string {
  let t = text.trim();
  const negative = t.startsWith('-');
  if (negative || t.startsWith('+')) t = t.slice(1);
  if (t.includes('.')) t = t.replace(/0+$/, '').replace(/\.$/, '');
  t = t.replace(/^0+(?=\d)/, '');
  return negative && t !== '0' ? `-${t}` : t;
}

/**
 * A time without a zone as databases print it, taken as UTC (`2026-06-10 14:03:00.5`), in ISO
 * 8601 as Date#toISOString prints it (`2026-06-10T14:03:00.500Z`); undefined for any other text
 * (a zero date, a year past 9999).
 */
export function isoUtc(text: string): string | undefined {
  if (!TIME_TEXT.test(text)) return undefined;
  const fraction = text.length > 20 ? text.slice(20, 23).padEnd(3, '0') : '000';
  return `${text.slice(0, 10)}T${text.slice(11, 19)}.${fraction}Z`;
}

/** `YYYY-MM-DD HH:MM:SS[.fraction]` with a month, day and time that exist (not MySQL's zero dates). */
const TIME_TEXT = /^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01]) (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?$/;

/** One value as a payload carries it. */
export function encodeValue(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return typeof value === 'bigint' ? exactNumber(value.toString()) : value;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  if (Array.isArray(value)) return value.map(encodeValue);
  return value;
}

/**
 * The payload of a row under the lens's `payload` (a list, a map, or every column read). Without
 * `payload`, a row whose values are all sent as they are is its own payload (no copy).
 */
export function shapePayload(lens: LensConfig, row: Record<string, unknown>): Record<string, unknown> {
  const payload = lens.payload;
  if (payload === undefined && sentAsIs(row)) return row;
  const out: Record<string, unknown> = {};
  if (payload === undefined) {
    for (const column in row) out[column] = encodeValue(row[column]);
  } else if (Array.isArray(payload)) {
    for (const column of payload) out[column] = encodeValue(row[column]);
  } else {
    for (const field in payload) out[field] = encodeValue(row[payload[field]]);
  }
  return out;
}

/** Whether encodeValue keeps every value of the row as it is (no object, no bigint). */
function sentAsIs(row: Record<string, unknown>): boolean {
  for (const column in row) {
    const value = row[column];
    if (typeof value === 'bigint' || (typeof value === 'object' && value !== null)) return false;
  }
  return true;
}

/** The payload JSON of a row: as its reader built it, else shapePayload's, encoded. */
export function payloadJson(lens: LensConfig, row: Row): string {
  return row[PAYLOAD_JSON] ?? JSON.stringify(shapePayload(lens, row));
}

/** The next slice's size: READ_SLICE, or fewer when these rows were wide (≈ SLICE_BYTES a slice). */
function nextSliceSize(records: PayloadRecord[]): number {
  let bytes = 0;
  for (const r of records) if (r.json) bytes += r.json.length;
  const perRow = bytes / Math.max(1, records.length);
  return Math.max(1, Math.min(READ_SLICE, Math.floor(SLICE_BYTES / Math.max(1, perRow))));
}

/**
 * The slice reads of one batch, issued in order: up to READ_AHEAD in flight, or one at a time
 * while the lens's row width is unknown (`sliceSize` undefined).
 */
class BatchReads {
  private readonly reads: Array<Promise<PayloadRecord[]>> = [];
  private start = 0;

  constructor(
    readonly changes: RecordChange[],
    private readonly read: (start: number, end: number) => Promise<PayloadRecord[]>,
    private readonly sliceSize: () => number | undefined,
  ) {}

  /** Every slice was asked for. */
  get issuedAll(): boolean {
    return this.start >= this.changes.length;
  }

  /** Issues reads until `ahead` are in flight (one while the row width is unknown). */
  fill(ahead = READ_AHEAD): void {
    while (this.reads.length < (this.sliceSize() ? ahead : 1) && !this.issuedAll) {
      const end = Math.min(this.changes.length, this.start + (this.sliceSize() ?? FIRST_SLICE));
      const read = this.read(this.start, end);
      read.catch(() => undefined); // its failure reaches whoever awaits it, not the process (it may never be awaited)
      this.reads.push(read);
      this.start = end;
    }
  }

  /** The oldest read not yet taken, or undefined. */
  shift(): Promise<PayloadRecord[]> | undefined {
    return this.reads.shift();
  }
}

/** The rows-for-ids stage of one payload sink (every lens of it). */
export class PayloadStage {
  private readonly readers = new Map<string, Promise<RowReader>>();
  private readonly progress = new Map<string, FullSyncProgress>();
  /** Each lens's slice size, from the width of its last rows. */
  private readonly sliceSize = new Map<string, number>();
  /** Each lens's batch being read for its sink, and the batch prepared to follow it. */
  private readonly active = new Map<string, BatchReads>();
  private readonly prepared = new Map<string, BatchReads>();
  private closed = false;

  constructor(private readonly ctx: Pick<SinkContext, 'name' | 'lenses' | 'openReader' | 'state' | 'log'>) {}

  /** Opens every lens's reader (lenses of tables): a table or column that does not exist fails here, at start. */
  async open(): Promise<void> {
    try {
      for (const lens of Object.keys(this.ctx.lenses)) {
        const opening = this.ctx.openReader(lens); // undefined for a stream: its changes carry rows
        if (opening) this.readers.set(lens, opening);
        await opening;
      }
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /**
   * The records of a batch, a slice at a time (one query each, at most READ_SLICE ids, fewer
   * for wide rows), in the batch's order. Up to READ_AHEAD slices are read while the caller
   * handles this one (with a prepared batch's first slice, about (READ_AHEAD + 1) × SLICE_BYTES
   * of rows in flight). A delete, or an upsert whose row is gone, has no payload. A batch
   * `prepare`d goes on from the read it started; once every slice of this batch is asked for,
   * the prepared batch's first read starts.
   */
  async *records(lens: string, changes: RecordChange[]): AsyncGenerator<PayloadRecord[]> {
    const prepared = this.prepared.get(lens);
    const reads = prepared?.changes === changes ? prepared : this.batchReads(lens, changes);
    if (reads === prepared) this.prepared.delete(lens);
    this.active.set(lens, reads);
    try {
      reads.fill();
      for (let read = reads.shift(); read; read = reads.shift()) {
        const records = await read;
        reads.fill();
        if (reads.issuedAll) this.prepared.get(lens)?.fill(1);
        yield records;
      }
    } finally {
      if (this.active.get(lens) === reads) this.active.delete(lens);
      this.prepared.get(lens)?.fill(1);
    }
  }

  /**
   * Starts reading the first slice of a batch the sink will be asked for next (`Sink.prepare`):
   * at once when no batch of the lens is reading, else once the one reading has asked for all
   * its slices. Only the next `records` call with the same array uses it (a retry reads afresh).
   * One slice is enough for the batch's first request to leave at once; more would only add to
   * the rows held in memory (and to the garbage collector's copying).
   */
  prepare(lens: string, changes: RecordChange[]): void {
    const reads = this.batchReads(lens, changes);
    this.prepared.set(lens, reads);
    const active = this.active.get(lens);
    if (!active || active.issuedAll) reads.fill(1);
  }

  private batchReads(lens: string, changes: RecordChange[]): BatchReads {
    return new BatchReads(changes, (start, end) => this.slice(lens, changes, start, end), () => this.sliceSize.get(lens));
  }

  /** The records of `changes` from `start` to `end`, their rows read in one query. */
  private async slice(lens: string, changes: RecordChange[], start: number, end: number): Promise<PayloadRecord[]> {
    const slice = changes.slice(start, end);
    const toRead = slice.filter((c) => c.action === 'upsert' && !c.row).map((c) => c.id);
    const recordOf = toRead.length > 0 ? await this.read(lens, toRead) : undefined;
    const config = this.ctx.lenses[lens];
    let next = 0;
    const records = slice.map((change): PayloadRecord => {
      if (change.action === 'delete') return { change };
      if (change.row) return { change, row: change.row, json: payloadJson(config, change.row) };
      return recordOf!(next++, change);
    });
    if (toRead.length > 0) this.sliceSize.set(lens, nextSliceSize(records));
    return records;
  }

  /**
   * Reads the rows of `ids` in one query; returns the record of the i-th of them (`change`),
   * without a payload when its row is gone.
   */
  private async read(lens: string, ids: string[]): Promise<(i: number, change: RecordChange) => PayloadRecord> {
    const reader = await this.reader(lens);
    const config = this.ctx.lenses[lens];
    if (reader.payloadsByIds) {
      const { json, tracking } = await reader.payloadsByIds(ids);
      const column = config.changeTrackingColumn;
      return (i, change) => (json[i] === '' ? { change } : { change, json: json[i], row: tracking && column ? { [column]: tracking[i] } : undefined });
    }
    const rows: Map<string, Row> = await reader.readByIds(ids);
    return (_, change) => {
      const row = rows.get(change.id);
      return row ? { change, row, json: payloadJson(config, row) } : { change };
    };
  }

  /**
   * The whole table in key order after `after`, a page (≤ READ_SLICE rows) at a time, as upserts
   * committed now. Counts into the lens's full sync progress.
   */
  async *scan(lens: string, after?: string): AsyncGenerator<PayloadRecord[]> {
    const config = this.ctx.lenses[lens];
    const reader = await this.reader(lens);
    for (;;) {
      const page = await reader.page({ after, limit: this.sliceSize.get(lens) ?? FIRST_SLICE });
      if (page.length === 0) return;
      const committedAt = Date.now();
      const records = page.map(({ id, row }): PayloadRecord => ({ change: { id, action: 'upsert', committedAt }, row, json: payloadJson(config, row) }));
      this.sliceSize.set(lens, nextSliceSize(records));
      yield records;
      after = page[page.length - 1].id;
    }
  }

  /**
   * A resumable full sync: each page of `scan` goes to `send`; once it resolves the cursor is
   * saved, so a crash (or a failed `send`, retried by the pipeline) resumes after the last
   * page accepted. The cursor is removed when the table was read to its end.
   */
  async fullSync(lens: string, send: (records: PayloadRecord[]) => Promise<void>): Promise<void> {
    const key = `fullsync/${this.ctx.name}/${lens}`;
    const saved = await this.ctx.state.get<FullSyncCursor>(key);
    const cursor: FullSyncCursor = saved ?? { rows: 0, startedAt: new Date().toISOString() };
    const progress = this.start(lens, cursor, saved !== undefined);
    let logged = Date.now();
    for await (const records of this.scan(lens, cursor.after)) {
      await send(records);
      cursor.after = records[records.length - 1].change.id;
      cursor.rows = progress.rows += records.length;
      await this.ctx.state.put(key, cursor);
      if (Date.now() - logged >= PROGRESS_LOG_MS) {
        logged = Date.now();
        this.ctx.log.info({ lens, rows: progress.rows }, 'full sync in progress');
      }
    }
    await this.ctx.state.delete(key);
    this.finish(lens);
  }

  /** Marks a full sync of the lens as running (from `cursor.rows` rows) and logs it. */
  start(lens: string, cursor: { rows: number; startedAt: string } = { rows: 0, startedAt: new Date().toISOString() }, resumed = false): FullSyncProgress {
    const progress: FullSyncProgress = { state: 'running', rows: cursor.rows, startedAt: cursor.startedAt };
    this.progress.set(lens, progress);
    this.ctx.log.info({ lens, rows: cursor.rows }, resumed ? 'full sync resumed' : 'full sync started');
    return progress;
  }

  /** Counts rows into a running full sync (sinks that stream it themselves). */
  count(lens: string, rows: number): void {
    const progress = this.progress.get(lens);
    if (progress) progress.rows += rows;
  }

  /** Marks the lens's full sync done and logs it. */
  finish(lens: string): void {
    const progress = this.progress.get(lens);
    if (!progress) return;
    progress.state = 'done';
    progress.finishedAt = new Date().toISOString();
    this.ctx.log.info({ lens, rows: progress.rows }, 'full sync done');
  }

  /** The lens's last (or running) full sync, for status. */
  fullSyncStatus(lens: string): FullSyncProgress | undefined {
    return this.progress.get(lens);
  }

  async close(): Promise<void> {
    this.closed = true;
    const readers = [...this.readers.values()];
    this.readers.clear();
    await Promise.all(readers.map(async (r) => (await r.catch(() => undefined))?.close()));
  }

  private reader(lens: string): Promise<RowReader> {
    const where = `sink "${this.ctx.name}", lens "${lens}"`;
    if (this.closed) return Promise.reject(new SinkError(`${where}: the sink is closed`, 'fatal'));
    let reader = this.readers.get(lens);
    if (!reader) {
      reader = this.ctx.openReader(lens) ?? Promise.reject(new SinkError(`${where}: its source is a stream with no table to read (a full sync, or a change that carried no row)`, 'fatal'));
      reader.catch(() => this.readers.delete(lens)); // a failed open is tried again next time
      this.readers.set(lens, reader);
    }
    return reader;
  }
}
