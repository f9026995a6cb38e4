/**
 * Row readers, one per database: `openRowReader` picks the one for a lens's source. The
 * worker uses them to re-read rows by id; the scheduled paths to page through tables.
 */
import type { LensConfig, SourceConfig } from '../config/types.js';
import type { RowReader } from '../types.js';
import { createMysqlReader } from './mysql.js';
import { createPostgresReader } from './postgres.js';

/** What every row reader is opened with. */
export interface RowReaderOptions {
  /** The source's connection URL. */
  url: string;
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

export function openRowReader(source: SourceConfig, lensName: string, lens: LensConfig): Promise<RowReader> {
  const options: RowReaderOptions = {
    url: source.url,
    lens: lensName,
    table: lens.table,
    primaryKey: lens.primaryKey,
    columns: lensColumns(lens),
    changeTrackingColumn: lens.changeTrackingColumn,
  };
  switch (source.type) {
    case 'postgres':
      return createPostgresReader(options);
    case 'mysql':
      return createMysqlReader(options);
  }
}
