/**
 * A lens's Query (`RowReader.query`, served as `POST /v1/query/:lens`) on MySQL and MariaDB: the
 * shared statements of src/table-query.ts in MySQL's spelling, with Postgres's semantics.
 *
 * - NULLs sort last ascending and first descending (MySQL sorts them first ascending), by
 *   ordering on `col IS NULL` before the column.
 * - Each row's sort values are text that compares exactly as the column does when given back as
 *   a cursor: temporal values at the column's precision (TIMESTAMP in the reader's UTC session),
 *   DECIMAL and BIGINT UNSIGNED with every digit (parameters cast as for ids, sql.ts), FLOAT as
 *   the double it compares as, binary values as hex. ENUM and SET columns order by their text,
 *   as they compare (MySQL would order them by their declaration index), BIT by its number.
 * - A value that does not fit its column (`cheap` for a DECIMAL, `-1` for an UNSIGNED) is a
 *   RecordRejectedError, as Postgres refuses it: MySQL answers such a value with a warning and a
 *   guess (0, its complement), so each statement is followed by SHOW WARNINGS on its connection.
 */
import type { Pool } from 'mysql2/promise';
import { RecordRejectedError } from '../../src/errors.js';
import { sortValues, tableQueryStatements, type QuerySql, type Statement } from '../../src/table-query.js';
import type { TableQuery, TableQueryResult } from '../../src/types.js';
import { classifyMysqlReadError } from './errors.js';
import { isBinaryType, keyParam, paramValue, quoteMysql, type ColumnType } from './sql.js';

export interface MysqlQueryTarget {
  pool: Pool;
  /** The quoted table. */
  table: string;
  /** The key's columns, in key order. */
  key: string[];
  /** The columns a query may name and returns (the key's and the lens's), with their types. */
  columns: ReadonlyMap<string, ColumnType>;
  /** A row read with `columns` as the reader returns rows: its id and those columns. */
  toRow(r: Record<string, unknown>): { id: string; row: Record<string, unknown> };
  /** Which read failed, to begin error messages: `lens "x": reading db.t failed`. */
  failure: string;
}

type Row = Record<string, unknown>;

/** One page of `q` on the target's table, with the count of every page. */
export async function queryMysqlTable(target: MysqlQueryTarget, q: TableQuery): Promise<TableQueryResult> {
  const select = [...target.columns.keys()].map(quoteMysql).join(', ');
  const { rows, count } = tableQueryStatements(q, select, target.table, target.key, mysqlSql(target.columns));
  const [found, total] = await Promise.all([readStrictly(target, rows), readStrictly(target, count)]);
  return { rows: found.map((r) => ({ ...target.toRow(r), sort: sortValues(r, q) })), total: Number(total[0].total) };
}

function mysqlSql(columns: ReadonlyMap<string, ColumnType>): QuerySql {
  const type = (name: string) => columns.get(name)!;
  return {
    columns: new Set(columns.keys()),
    quote: quoteMysql,
    param: (name) => keyParam(type(name)),
    value: (name, value) => (typeof value === 'boolean' ? (value ? '1' : '0') : typeof value === 'number' ? String(value) : paramValue(type(name), value)),
    ordered: (name, column) => {
      const { dataType } = type(name);
      if (dataType === 'enum' || dataType === 'set') return `CAST(${column} AS CHAR)`;
      return dataType === 'bit' ? `(${column} + 0)` : column;
    },
    sortText: (name, ordered) => {
      const column = type(name);
      if (isBinaryType(column)) return `LOWER(HEX(${ordered}))`;
      // A FLOAT compares as a double: its shortest decimal (0.1) would not find it again.
      return /^(float|double|real)$/.test(column.dataType) ? `CAST(${ordered} + 0e0 AS CHAR)` : `CAST(${ordered} AS CHAR)`;
    },
    orderTerm: (ordered, dir, nullable) => (nullable ? `${ordered} IS NULL ${dir}, ${ordered} ${dir}` : `${ordered} ${dir}`),
    count: 'COUNT(*)',
  };
}

/** Runs a statement; a warning it leaves (a value the server had to guess at) rejects it like an error. */
async function readStrictly(target: MysqlQueryTarget, statement: Statement): Promise<Row[]> {
  try {
    const conn = await target.pool.getConnection();
    try {
      const [rows] = await conn.query(statement.text, statement.values);
      const [warnings] = await conn.query('SHOW WARNINGS');
      const messages = [...new Set((warnings as Row[]).map((w) => String(w.Message)))];
      if (messages.length > 0) {
        throw new RecordRejectedError(`${target.failure}: ${messages.join('; ')}; pass values of the column's type (where) or the previous page's cursor unchanged`);
      }
      return rows as Row[];
    } finally {
      conn.release();
    }
  } catch (err) {
    throw classifyMysqlReadError(err, target.failure);
  }
}
