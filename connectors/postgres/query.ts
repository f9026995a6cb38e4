/**
 * A lens's Query (`RowReader.query`, served as `POST /v1/query/:lens`) on Postgres: the shared
 * statements of src/table-query.ts with every parameter cast to its column's type, and each
 * row's sort values in their output-function text (`::text`), which those casts take back.
 */
import { quoteIdent as quote } from '../../src/postgres.js';
import { tableQueryStatements, type QuerySql, type Statement } from '../../src/table-query.js';
import type { TableQuery } from '../../src/types.js';

/** A column a query may name: its SQL type, to cast parameters to. */
export type ColumnTypes = ReadonlyMap<string, string>;

function postgresSql(types: ColumnTypes): QuerySql {
  return {
    columns: new Set(types.keys()),
    quote,
    param: (name, n) => `$${n}::${types.get(name)}`,
    value: (_, value) => (typeof value === 'string' ? value : JSON.stringify(value)),
    sortText: (_, column) => `${column}::text`,
    // Postgres's own order: NULLs last ascending, first descending.
    orderTerm: (column, dir) => `${column} ${dir}`,
    count: 'count(*)::int',
  };
}

/**
 * The row query and the count query of `q`. `select` is the column list (without SELECT),
 * `table` the quoted table, `key` the key columns in order.
 */
export function queryStatements(q: TableQuery, select: string, table: string, key: string[], types: ColumnTypes): { rows: Statement; count: Statement } {
  return tableQueryStatements(q, select, table, key, postgresSql(types));
}
