/**
 * The SQL of a lens's Query (`RowReader.query`, served as `POST /v1/query/:lens`) on Postgres.
 * Column names come only from the lens's own columns (checked here against `columns`, and
 * quoted); every value is a parameter cast to its column's type. Paging is keyset: the
 * position after the last row is its orderBy values and its key, so rows written meanwhile
 * neither repeat nor shift the next page.
 */
import { TributaryError } from '../../src/errors.js';
import { decodeId } from '../../src/ids.js';
import { quoteIdent as quote } from '../../src/postgres.js';
import type { TableQuery } from '../../src/types.js';

/** A column a query may name: its SQL type, to cast parameters to. */
export type ColumnTypes = ReadonlyMap<string, string>;

interface Statement {
  text: string;
  values: unknown[];
}

/** Builds `WHERE` conditions, numbering parameters as it goes. */
class Conditions {
  readonly values: unknown[] = [];

  constructor(private readonly types: ColumnTypes) {}

  /** The column, quoted, after checking it is one of the lens's. */
  column(name: string): string {
    if (!this.types.has(name)) throw new TributaryError(`Query names column ${JSON.stringify(name)}, which is not one of the lens's`);
    return quote(name);
  }

  param(name: string, value: unknown): string {
    this.values.push(typeof value === 'string' ? value : JSON.stringify(value));
    return `$${this.values.length}::${this.types.get(name)}`;
  }

  equals(name: string, value: unknown): string {
    return value === null ? `${this.column(name)} IS NULL` : `${this.column(name)} = ${this.param(name, value)}`;
  }

  /** Strictly after `value` in the column's order (ascending: NULLs last; descending: NULLs first). */
  after(name: string, dir: 'asc' | 'desc', value: string | null): string {
    const c = this.column(name);
    if (dir === 'asc') return value === null ? 'FALSE' : `(${c} > ${this.param(name, value)} OR ${c} IS NULL)`;
    return value === null ? `${c} IS NOT NULL` : `${c} < ${this.param(name, value)}`;
  }
}

/**
 * The row query and the count query of `q`. `select` is the column list (without SELECT),
 * `table` the quoted table, `key` the key columns in order.
 */
export function queryStatements(q: TableQuery, select: string, table: string, key: string[], types: ColumnTypes): { rows: Statement; count: Statement } {
  if (!Number.isSafeInteger(q.limit) || q.limit < 1 || !Number.isSafeInteger(q.offset) || q.offset < 0) {
    throw new TributaryError(`Query limit ${q.limit} and offset ${q.offset} must be whole numbers`);
  }
  const where = new Conditions(types);
  const filters = Object.entries(q.where).map(([name, value]) => where.equals(name, value));
  const count = { text: `SELECT count(*)::int AS total FROM ${table}${clause(filters)}`, values: [...where.values] };

  const order = [...q.orderBy, ...key.map((column) => ({ column, dir: 'asc' as const }))];
  if (q.after) {
    if (q.after.values.length !== q.orderBy.length) throw new TributaryError('Query cursor does not match its orderBy');
    const positions: Array<string | null> = [...q.after.values, ...decodeId(q.after.id, key.length)];
    const alternatives = order.map((o, i) => {
      const same = order.slice(0, i).map((p, j) => where.equals(p.column, positions[j]));
      return `(${[...same, where.after(o.column, o.dir, positions[i])].join(' AND ')})`;
    });
    filters.push(`(${alternatives.join(' OR ')})`);
  }
  const sort = q.orderBy.map((o, i) => `${where.column(o.column)}::text AS "__s${i}"`);
  const orderSql = order.map((o) => `${where.column(o.column)} ${o.dir === 'asc' ? 'ASC' : 'DESC'}`).join(', ');
  const text = `SELECT ${[select, ...sort].join(', ')} FROM ${table}${clause(filters)} ORDER BY ${orderSql} LIMIT ${q.limit} OFFSET ${q.offset}`;
  return { rows: { text, values: where.values }, count };
}

function clause(conditions: string[]): string {
  return conditions.length === 0 ? '' : ` WHERE ${conditions.join(' AND ')}`;
}
