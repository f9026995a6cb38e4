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
}

/** Columns a lens reads besides its key: fields, metadata and the template's placeholders. */
export function lensColumns(lens: LensConfig): string[] {
  const template = [...(lens.template ?? '').matchAll(/\{\{\s*([\w.-]+)\s*\}\}/g)].map((m) => m[1]);
  return [...new Set([...lens.fields, ...lens.metadata, ...template])];
}

export function readerOptions(lensName: string, lens: LensConfig): RowReaderOptions {
  return { lens: lensName, table: lens.table, primaryKey: lens.primaryKey, columns: lensColumns(lens), changeTrackingColumn: lens.changeTrackingColumn };
}
