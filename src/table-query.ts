/**
 * The SQL of a lens's Query (`RowReader.query`, served as `POST /v1/query/:lens`), for every
 * source that reads a SQL table; each database supplies its spelling (`QuerySql`). Column names
 * come only from the lens's own columns (checked here, and quoted); every value is a parameter.
 * Paging is keyset: the position after the last row is its orderBy values (as `sortText`) and
 * its key, so rows written meanwhile neither repeat nor shift the next page.
 */
import { TributaryError } from './errors.js';
import { decodeId } from './ids.js';
import type { TableQuery } from './types.js';

export interface Statement {
  text: string;
  values: unknown[];
}

/** How one database spells the parts of a query. */
export interface QuerySql {
  /** The columns a query may name. */
  readonly columns: ReadonlySet<string>;
  quote(name: string): string;
  /** The placeholder of parameter `n` (1-based, numbered in order of appearance), a value of column `name`. */
  param(name: string, n: number): string;
  /** A where value, a sort text or an id's key value, as the parameter `param` takes. */
  value(name: string, value: string | number | boolean): unknown;
  /** The column as the query orders and compares it, given it quoted (default: as it is). */
  ordered?(name: string, column: string): string;
  /** The ordered column as text that `value` and `param` take back: a row's sort value. */
  sortText(name: string, ordered: string): string;
  /** ORDER BY of an ordered column: NULLs last ascending, first descending. `nullable`: false for key columns. */
  orderTerm(ordered: string, dir: 'ASC' | 'DESC', nullable: boolean): string;
  /** The expression counting rows. */
  count: string;
}

/** Builds `WHERE` conditions, collecting parameters as it goes. */
class Conditions {
  readonly values: unknown[] = [];

  constructor(private readonly sql: QuerySql) {}

  /** The column, quoted, after checking it is one of the lens's. */
  column(name: string): string {
    if (!this.sql.columns.has(name)) throw new TributaryError(`Query names column ${JSON.stringify(name)}, which is not one of the lens's`);
    return this.sql.quote(name);
  }

  ordered(name: string): string {
    const column = this.column(name);
    return this.sql.ordered?.(name, column) ?? column;
  }

  param(name: string, value: string | number | boolean): string {
    this.values.push(this.sql.value(name, value));
    return this.sql.param(name, this.values.length);
  }

  /** `expr` (column `name` as it is or ordered) equals `value`; null matches NULL. */
  equals(name: string, expr: string, value: string | number | boolean | null): string {
    return value === null ? `${expr} IS NULL` : `${expr} = ${this.param(name, value)}`;
  }

  /** Strictly after `value` in the column's order (ascending: NULLs last; descending: NULLs first). */
  after(name: string, dir: 'asc' | 'desc', value: string | null): string {
    const c = this.ordered(name);
    if (dir === 'asc') return value === null ? 'FALSE' : `(${c} > ${this.param(name, value)} OR ${c} IS NULL)`;
    return value === null ? `${c} IS NOT NULL` : `${c} < ${this.param(name, value)}`;
  }
}

/**
 * The row query and the count query of `q`. `select` is the column list (without SELECT),
 * `table` the quoted table, `key` the key columns in order. Each row's orderBy values come
 * as text in the columns `__s0`, `__s1`, … (`sortValues`).
 */
export function tableQueryStatements(q: TableQuery, select: string, table: string, key: string[], sql: QuerySql): { rows: Statement; count: Statement } {
  if (!Number.isSafeInteger(q.limit) || q.limit < 1 || !Number.isSafeInteger(q.offset) || q.offset < 0) {
    throw new TributaryError(`Query limit ${q.limit} and offset ${q.offset} must be whole numbers`);
  }
  const where = new Conditions(sql);
  const filters = Object.entries(q.where).map(([name, value]) => where.equals(name, where.column(name), value));
  const count = { text: `SELECT ${sql.count} AS total FROM ${table}${clause(filters)}`, values: [...where.values] };

  const order = [...q.orderBy, ...key.map((column) => ({ column, dir: 'asc' as const }))];
  if (q.after) {
    if (q.after.values.length !== q.orderBy.length) throw new TributaryError('Query cursor does not match its orderBy');
    const positions: Array<string | null> = [...q.after.values, ...decodeId(q.after.id, key.length)];
    const alternatives = order.map((o, i) => {
      const same = order.slice(0, i).map((p, j) => where.equals(p.column, where.ordered(p.column), positions[j]));
      return `(${[...same, where.after(o.column, o.dir, positions[i])].join(' AND ')})`;
    });
    filters.push(`(${alternatives.join(' OR ')})`);
  }
  const sort = q.orderBy.map((o, i) => `${sql.sortText(o.column, where.ordered(o.column))} AS ${sql.quote(`__s${i}`)}`);
  const orderSql = order.map((o, i) => sql.orderTerm(where.ordered(o.column), o.dir === 'asc' ? 'ASC' : 'DESC', i < q.orderBy.length)).join(', ');
  const text = `SELECT ${[select, ...sort].join(', ')} FROM ${table}${clause(filters)} ORDER BY ${orderSql} LIMIT ${q.limit} OFFSET ${q.offset}`;
  return { rows: { text, values: where.values }, count };
}

/** A row's orderBy values as text, from the columns tableQueryStatements adds. */
export function sortValues(row: Record<string, unknown>, q: TableQuery): Array<string | null> {
  return q.orderBy.map((_, i) => row[`__s${i}`] as string | null);
}

function clause(conditions: string[]): string {
  return conditions.length === 0 ? '' : ` WHERE ${conditions.join(' AND ')}`;
}
