/**
 * Reads a lens's rows from MySQL or MariaDB: by id (the worker's records jobs), in key order
 * (full and incremental sweeps, polling cursors, smart sync) and as the worker's Query
 * (./query.ts). Key values are read with
 * `dateStrings` and exact big numbers and turned into ids by src/ids.ts exactly as the binlog
 * connector turns its row images into ids, so both sides agree on every id. A payload reader
 * (RowReaderOptions.payloadValues) gives values their types as the Postgres reader does: BIGINT
 * and DECIMAL as JSON numbers when exact (else their text), DATETIME and TIMESTAMP as ISO 8601
 * UTC, DATE as its text; JSON columns come parsed and binary ones as Buffers (base64 in the
 * payload) from the driver.
 */
import mysql from 'mysql2/promise';
import { SourceSetupError } from '../../src/errors.js';
import { mysqlConnection } from './connection.js';
import { classifyMysqlError, classifyMysqlReadError } from './errors.js';
import { queryMysqlTable } from './query.js';
import { decodeId } from '../../src/ids.js';
import { splitTableName } from '../../src/table-name.js';
import { encodeMysqlId, isMysqlNumericType, mysqlKeyText } from './ids.js';
import { keyParam, paramValue, quoteMysql } from './sql.js';
import { exactNumber, isoUtc } from '../../src/payload.js';
import type { RowReader } from '../../src/types.js';
import type { RowReaderOptions } from '../../src/rows.js';

/** The mysql2 options under which key values come out in the shared id text form (with a UTC session for TIMESTAMP). */
export const MYSQL_VALUE_OPTIONS = { dateStrings: true, supportBigNumbers: true, bigNumberStrings: true, timezone: 'Z' } as const;

/** A canonical `database.table` name (src/table-name.ts) as quoted SQL. */
const quoteTable = (table: string) => {
  const { schema, name } = splitTableName(table, '`');
  return `${quoteMysql(schema)}.${quoteMysql(name)}`;
};

interface Column {
  name: string;
  dataType: string;
  columnType: string;
  /** 1-based position in the primary key, or null. */
  pkPos: number | null;
}

/** The columns of `database.table` in order, with their primary key positions. */
export async function mysqlColumns(query: (sql: string, params: unknown[]) => Promise<unknown[]>, table: string): Promise<Column[]> {
  const { schema, name } = splitTableName(table, '`');
  const rows = (await query(
    `SELECT c.COLUMN_NAME AS name, c.DATA_TYPE AS dataType, c.COLUMN_TYPE AS columnType, k.ORDINAL_POSITION AS pkPos
       FROM information_schema.COLUMNS c
       LEFT JOIN information_schema.KEY_COLUMN_USAGE k
         ON k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME
        AND k.CONSTRAINT_NAME = 'PRIMARY'
      WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION`,
    [schema, name],
  )) as Array<Record<string, unknown>>;
  return rows.map((r) => ({
    name: String(r.name),
    dataType: String(r.dataType).toLowerCase(),
    columnType: String(r.columnType).toLowerCase(),
    pkPos: r.pkPos === null ? null : Number(r.pkPos),
  }));
}

/** The table's primary key column names, in key order. */
export function primaryKeyOf(columns: Column[]): string[] {
  return columns.filter((c) => c.pkPos !== null).sort((a, b) => a.pkPos! - b.pkPos!).map((c) => c.name);
}

/** How a payload reader turns a column's driver value (text for big numbers and times) into its payload value; undefined: as it is. */
function payloadValue(column: Column): ((value: unknown) => unknown) | undefined {
  if (column.dataType === 'bigint' || column.dataType === 'decimal' || column.dataType === 'numeric') {
    return (value) => (typeof value === 'string' ? exactNumber(value) : value);
  }
  if (column.dataType === 'datetime' || column.dataType === 'timestamp') {
    return (value) => (typeof value === 'string' ? (isoUtc(value) ?? value) : value); // DATETIME has no zone: taken as UTC; TIMESTAMP is read in UTC
  }
  return undefined;
}

export async function createMysqlReader(url: string, options: RowReaderOptions): Promise<RowReader> {
  const pool = mysql.createPool(mysqlConnection(url, { connectionLimit: 2, ...MYSQL_VALUE_OPTIONS }));
  // TIMESTAMP values in UTC, as the binlog connector prints them (timezone 'Z').
  pool.pool.on('connection', (conn) => conn.query("SET time_zone = '+00:00'"));
  const where = `lens "${options.lens}"`;
  const run = async (sql: string, params: unknown[]) => (await pool.query(sql, params))[0] as unknown[];
  let cols: Column[];
  try {
    cols = await mysqlColumns(run, options.table);
  } catch (err) {
    await pool.end();
    throw classifyMysqlError(err, `${where}: cannot read the columns of ${options.table}`);
  }
  const byName = new Map(cols.map((c) => [c.name, c]));
  const keyNames = options.primaryKey ?? primaryKeyOf(cols);
  const columns = options.allColumns ? [...new Set([...cols.map((c) => c.name), ...options.columns])] : options.columns;
  const missing = [...keyNames, ...columns, ...(options.changeTrackingColumn ? [options.changeTrackingColumn] : [])].filter((c) => !byName.has(c));
  if (cols.length === 0 || keyNames.length === 0 || missing.length) {
    await pool.end();
    throw new SourceSetupError(
      cols.length === 0
        ? `${where}: table ${options.table} does not exist (or the reader's user cannot see it)`
        : keyNames.length === 0
          ? `${where}: table ${options.table} has no primary key; set primaryKey on the lens`
          : `${where}: column(s) ${missing.join(', ')} not in table ${options.table}; check fields, metadata, payload and changeTrackingColumn`,
    );
  }
  const key = keyNames.map((n) => byName.get(n)!);
  const numeric = key.map((k) => isMysqlNumericType(k.dataType));
  const tracking = options.changeTrackingColumn ? byName.get(options.changeTrackingColumn) : undefined;

  const otherCols = columns.filter((c) => !keyNames.includes(c) && c !== tracking?.name);
  const selected = [...new Set([...keyNames, ...(tracking ? [tracking.name] : []), ...otherCols])];
  const select = `SELECT ${selected.map(quoteMysql).join(', ')} FROM ${quoteTable(options.table)}`;
  const keyOrder = key.map((k) => quoteMysql(k.name)).join(', ');

  /** `(a, b) > after` spelled out, so the optimiser uses the key as a range. */
  function after(columns: Column[], values: string[]): { sql: string; params: string[] } {
    const ors: string[] = [];
    const params: string[] = [];
    for (let i = 0; i < columns.length; i++) {
      const ands = columns.slice(0, i).map((c) => `${quoteMysql(c.name)} = ${keyParam(c)}`);
      ands.push(`${quoteMysql(columns[i].name)} > ${keyParam(columns[i])}`);
      ors.push(`(${ands.join(' AND ')})`);
      for (let j = 0; j <= i; j++) params.push(paramValue(columns[j], values[j]));
    }
    return { sql: `(${ors.join(' OR ')})`, params };
  }

  /** Payload readers' value conversions, by column name (none for other readers). */
  const converters = new Map(options.payloadValues ? cols.map((c) => [c.name, payloadValue(c)] as const).filter(([, f]) => f) : []);
  const toRowOf = (r: Record<string, unknown>, columns: string[]) => {
    const id = encodeMysqlId(key.map((k) => mysqlKeyText(r[k.name])), numeric);
    const row: Record<string, unknown> = {};
    for (const c of columns) {
      const convert = converters.get(c);
      row[c] = convert ? convert(r[c]) : r[c];
    }
    return { id, row, cursor: tracking ? mysqlKeyText(r[tracking.name]) : undefined };
  };
  const toRow = (r: Record<string, unknown>) => toRowOf(r, columns);
  const failure = `${where}: reading ${options.table} failed`;

  async function query(sql: string, params: unknown[]) {
    try {
      return ((await pool.query(sql, params))[0] as Array<Record<string, unknown>>).map(toRow);
    } catch (err) {
      throw classifyMysqlReadError(err, failure);
    }
  }

  // A query's rows have the key's columns too; it may name the key's and the lens's columns.
  const queryColumns = new Map([...keyNames, ...options.columns].map((n) => [n, byName.get(n)!]));
  const queryTarget = {
    pool, table: quoteTable(options.table), key: keyNames, columns: queryColumns, failure,
    toRow: (r: Record<string, unknown>) => toRowOf(r, [...queryColumns.keys()]),
  };

  return {
    async readByIds(ids) {
      if (ids.length === 0) return new Map();
      const params: string[] = [];
      const match = key.map((k) => `${quoteMysql(k.name)} = ${keyParam(k)}`).join(' AND ');
      for (const id of ids) decodeId(id, key.length).forEach((v, i) => params.push(paramValue(key[i], v)));
      const sql =
        key.length === 1
          ? `${select} WHERE ${keyOrder} IN (${ids.map(() => keyParam(key[0])).join(', ')})`
          : `${select} WHERE ${ids.map(() => `(${match})`).join(' OR ')}`;
      return new Map((await query(sql, params)).map(({ id, row }) => [id, row]));
    },

    async page({ after: afterId, limit, changedSince }) {
      const lim = Math.max(1, Math.floor(limit));
      if (changedSince) {
        if (!tracking) throw new SourceSetupError(`${where}: incremental sync needs changeTrackingColumn on the lens`);
        const col = quoteMysql(tracking.name);
        const order = `ORDER BY ${col}, ${keyOrder} LIMIT ${lim}`;
        if (changedSince.value === undefined) return query(`${select} WHERE ${col} IS NOT NULL ${order}`, []);
        if (changedSince.id === undefined) return query(`${select} WHERE ${col} > ? ${order}`, [changedSince.value]);
        const rest = after(key, decodeId(changedSince.id, key.length));
        return query(`${select} WHERE (${col} > ? OR (${col} = ? AND ${rest.sql})) ${order}`, [changedSince.value, changedSince.value, ...rest.params]);
      }
      if (afterId === undefined) return query(`${select} ORDER BY ${keyOrder} LIMIT ${lim}`, []);
      const rest = after(key, decodeId(afterId, key.length));
      return query(`${select} WHERE ${rest.sql} ORDER BY ${keyOrder} LIMIT ${lim}`, rest.params);
    },

    query: (q) => queryMysqlTable(queryTarget, q),

    async describeChangeTracking() {
      const column = options.changeTrackingColumn ?? '';
      const { schema, name: table } = splitTableName(options.table, '`');
      // InnoDB secondary indexes carry the primary key: an index starting with the column serves (column, key).
      const [indexes] = await pool.query('SELECT 1 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ? AND SEQ_IN_INDEX = 1 LIMIT 1', [schema, table, column]);
      const name = `${table}_${column}_tributary`.slice(0, 64);
      return { exists: byName.has(column), indexed: (indexes as unknown[]).length > 0, createIndex: `CREATE INDEX ${quoteMysql(name)} ON ${quoteTable(options.table)} (${quoteMysql(column)})` };
    },

    async close() {
      await pool.end();
    },
  };
}
