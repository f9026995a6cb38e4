/**
 * The worker's Query endpoint (`POST /v1/query/:lens`, seed 002's Bridge; contract:
 * https://semilayer.dev/reference/api): rows of a lens's table read live through its row
 * reader, filtered by equality, ordered and paged.
 *
 * `parseQuery` checks a request body against the lens's output fields (its fields, metadata,
 * template placeholders and configured primaryKey) before anything reaches a reader, so an
 * unknown or hostile field name is a 400 and never SQL. Cursors are opaque: base64url of the
 * last row's orderBy values and id, with a fingerprint of the `where` and `orderBy` they page.
 */
import { createHash } from 'node:crypto';
import { TributaryError } from '../errors.js';
import type { QueryOrder, RowReader, TableQuery } from '../types.js';

export const QUERY_DEFAULT_LIMIT = 100;
/** Larger limits are capped to this. */
export const QUERY_MAX_LIMIT = 1000;
/** Deeper offsets are refused: page with the cursor instead. */
export const QUERY_MAX_OFFSET = 10_000;
const MAX_ORDER_FIELDS = 8;
const MAX_CURSOR_CHARS = 4096;

/** A request body that does not fit: the message names the field and why (answered 400). */
export class QueryInputError extends TributaryError {}

export interface QueryRequest {
  query: TableQuery;
  /** Output fields to return; undefined: every column of the row. */
  select?: string[];
  /** Fingerprint of `where` and `orderBy`, carried by cursors. */
  fingerprint: string;
}

export interface QueryAnswer {
  rows: Array<Record<string, unknown>>;
  total: number;
  nextCursor: string | null;
}

type Scalar = string | number | boolean | null;

/** Checks a Query body against the lens's output `fields`; throws QueryInputError. */
export function parseQuery(body: Record<string, unknown>, fields: readonly string[]): QueryRequest {
  const known = new Set(fields);
  const field = (at: string, name: unknown): string => {
    if (typeof name !== 'string') throw new QueryInputError(`${at}: expected a field name, got ${typeof name}`);
    if (!known.has(name)) throw new QueryInputError(`${at}: unknown field ${JSON.stringify(name.slice(0, 80))}; expected one of ${fields.join(', ')}`);
    return name;
  };
  const where = parseWhere(body.where, field);
  const orderBy = parseOrderBy(body.orderBy, field);
  const limit = Math.min(integer('limit', body.limit, QUERY_DEFAULT_LIMIT, 1, Number.MAX_SAFE_INTEGER), QUERY_MAX_LIMIT);
  const offset = integer('offset', body.offset, 0, 0, QUERY_MAX_OFFSET);
  const select = body.select === undefined ? undefined : parseSelect(body.select, field);
  const fingerprint = createHash('sha256').update(JSON.stringify([where, orderBy])).digest('base64url').slice(0, 16);
  let after: TableQuery['after'];
  if (body.cursor !== undefined) {
    if (body.offset !== undefined) throw new QueryInputError('cursor: use cursor or offset, not both');
    after = decodeCursor(body.cursor, fingerprint, orderBy.length);
  }
  return { query: { where, orderBy, after, offset, limit }, select, fingerprint };
}

function parseWhere(where: unknown, field: (at: string, name: unknown) => string): Record<string, Scalar> {
  if (where === undefined) return {};
  if (where === null || typeof where !== 'object' || Array.isArray(where)) throw new QueryInputError('where: expected an object of field: value');
  const out: Record<string, Scalar> = {};
  for (const [name, value] of Object.entries(where)) {
    field('where', name);
    const scalar = value === null || typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
    if (!scalar) throw new QueryInputError(`where.${name}: expected a string, number, boolean or null (equality only)`);
    out[name] = value as Scalar;
  }
  return out;
}

function parseOrderBy(orderBy: unknown, field: (at: string, name: unknown) => string): QueryOrder[] {
  if (orderBy === undefined) return [];
  const list = Array.isArray(orderBy) ? orderBy : [orderBy];
  if (list.length > MAX_ORDER_FIELDS) throw new QueryInputError(`orderBy: at most ${MAX_ORDER_FIELDS} fields`);
  const seen = new Set<string>();
  return list.map((item: unknown, i) => {
    const at = Array.isArray(orderBy) ? `orderBy[${i}]` : 'orderBy';
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new QueryInputError(`${at}: expected { field, dir? }`);
    const { field: name, dir = 'asc', ...rest } = item as Record<string, unknown>;
    if (Object.keys(rest).length > 0) throw new QueryInputError(`${at}: unknown key ${JSON.stringify(Object.keys(rest)[0].slice(0, 80))}; expected field, dir`);
    const column = field(`${at}.field`, name);
    if (dir !== 'asc' && dir !== 'desc') throw new QueryInputError(`${at}.dir: expected "asc" or "desc"`);
    if (seen.has(column)) throw new QueryInputError(`${at}.field: ${column} is already in orderBy`);
    seen.add(column);
    return { column, dir };
  });
}

function parseSelect(select: unknown, field: (at: string, name: unknown) => string): string[] {
  if (!Array.isArray(select) || select.length === 0) throw new QueryInputError('select: expected a non-empty array of field names');
  return [...new Set(select.map((name, i) => field(`select[${i}]`, name)))];
}

function integer(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new QueryInputError(`${name}: expected an integer from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ''}`);
  }
  return value;
}

export function encodeCursor(fingerprint: string, values: Array<string | null>, id: string): string {
  return Buffer.from(JSON.stringify({ f: fingerprint, v: values, id })).toString('base64url');
}

function decodeCursor(cursor: unknown, fingerprint: string, orderFields: number): TableQuery['after'] {
  const bad = (why: string) => new QueryInputError(`cursor: ${why}; pass meta.nextCursor of the previous page unchanged`);
  if (typeof cursor !== 'string' || cursor.length === 0 || cursor.length > MAX_CURSOR_CHARS) throw bad('not a cursor');
  let parsed: { f?: unknown; v?: unknown; id?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as typeof parsed;
  } catch {
    throw bad('not a cursor');
  }
  const values = parsed?.v;
  if (!Array.isArray(values) || typeof parsed.id !== 'string' || !values.every((v) => v === null || typeof v === 'string')) throw bad('not a cursor');
  if (parsed.f !== fingerprint || values.length !== orderFields) throw bad('it belongs to another where or orderBy');
  return { values: values as Array<string | null>, id: parsed.id };
}

/** Runs a parsed query through the lens's reader: one page, its total and the next page's cursor. */
export async function runQuery(reader: RowReader, request: QueryRequest): Promise<QueryAnswer> {
  const { query, select } = request;
  // One row more than asked: whether there is a next page.
  const { rows, total } = await reader.query({ ...query, limit: query.limit + 1 });
  const page = rows.slice(0, query.limit);
  const last = page[page.length - 1];
  const nextCursor = rows.length > query.limit ? encodeCursor(request.fingerprint, last.sort, last.id) : null;
  const pick = (row: Record<string, unknown>) => (select ? Object.fromEntries(select.map((f) => [f, row[f] ?? null])) : row);
  return { rows: page.map((r) => pick(r.row)), total, nextCursor };
}
