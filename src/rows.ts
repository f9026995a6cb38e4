/**
 * Reading a lens's rows from its source database. Each source that reads tables has its own
 * RowReader (connectors/<source>/reader.ts, opened through its spec); the worker re-reads rows
 * by id with it, the scheduled paths (polling, smart sync sweeps, full syncs) page through tables.
 */
import type { LensConfig } from './config/types.js';

/** What every row reader is opened with (besides its source's connection URL). */
export interface RowReaderOptions {
  lens: string;
  /** `schema.table` (Postgres) or `database.table` (MySQL). */
  table: string;
  /** Key columns in order; default: the table's primary key. */
  primaryKey?: string[];
  /** Columns to read besides the key (fields, metadata, template placeholders). */
  columns: string[];
  changeTrackingColumn?: string;
  /** Read every column of the table (a payload sink's lens without `payload`), besides `columns`. */
  allColumns?: boolean;
  /**
   * Values as a payload carries them (src/payload.ts): numbers that are exact as JSON numbers
   * (bigint, numeric), else their text; times as instants (timestamps without a zone are UTC).
   * Off: the driver's defaults (what the worker reads).
   */
  payloadValues?: boolean;
  /**
   * A payload reader's `payload` as `[outField, column]` pairs in order (undefined: every column
   * read). A reader that can build the payload's JSON in the database returns rows holding only
   * that text (under PAYLOAD_JSON) and the changeTrackingColumn.
   */
  payloadFields?: Array<[string, string]>;
}

/** The key of a row's payload JSON when its reader built it (RowReaderOptions.payloadFields). */
export const PAYLOAD_JSON = Symbol('payload JSON');

/** A row as a reader returns it: its columns, and its payload's JSON when the reader built it. */
export type Row = Record<string, unknown> & { [PAYLOAD_JSON]?: string };

/** Columns a lens reads besides its key: fields, metadata, the template's placeholders and payload columns. */
export function lensColumns(lens: LensConfig): string[] {
  const template = [...(lens.template ?? '').matchAll(/\{\{\s*([\w.-]+)\s*\}\}/g)].map((m) => m[1]);
  const payload = Array.isArray(lens.payload) ? lens.payload : Object.values(lens.payload ?? {});
  return [...new Set([...lens.fields, ...lens.metadata, ...template, ...payload])];
}

/**
 * The reader options of a lens. `forPayload`: the reader of a payload sink (src/payload.ts),
 * which reads every column when the lens names no `payload`, and values as payloads carry them.
 */
export function readerOptions(lensName: string, lens: LensConfig, forPayload = false): RowReaderOptions {
  return {
    lens: lensName,
    table: lens.table,
    primaryKey: lens.primaryKey,
    // A payload sink reads the changeTrackingColumn too (seyn's sourceUpdatedAt).
    columns: forPayload && lens.changeTrackingColumn ? [...new Set([...lensColumns(lens), lens.changeTrackingColumn])] : lensColumns(lens),
    changeTrackingColumn: lens.changeTrackingColumn,
    ...(forPayload ? { allColumns: lens.payload === undefined, payloadValues: true, payloadFields: payloadFields(lens) } : {}),
  };
}

/** The lens's `payload` as `[outField, column]` pairs; undefined without one (every column). */
function payloadFields(lens: LensConfig): Array<[string, string]> | undefined {
  if (lens.payload === undefined) return undefined;
  return Array.isArray(lens.payload) ? lens.payload.map((column) => [column, column]) : Object.entries(lens.payload);
}

/** Roughly what a value weighs once encoded (strings and bytes by length, objects as JSON). */
export function approxBytes(value: unknown): number {
  if (typeof value === 'string') return value.length + 2;
  if (value instanceof Uint8Array) return Math.ceil(value.byteLength * 1.34);
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) return JSON.stringify(value).length;
  return 8;
}

/** Roughly what a row weighs once encoded, for byte bounds on rows in flight. */
export function rowBytes(row: Record<string, unknown>): number {
  let bytes = 0;
  for (const v of Object.values(row)) bytes += approxBytes(v);
  return bytes;
}
