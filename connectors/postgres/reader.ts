/**
 * Reads a lens's rows from Postgres: by id (the worker's records jobs) and in key order
 * (full and incremental sweeps, polling cursors, smart sync). Ids are rebuilt from the key columns' text output, exactly as
 * the logical connector encodes them, so both sides agree on every id.
 */
import pg from 'pg';
import { RecordRejectedError, SourceSetupError, describeError } from '../../src/errors.js';
import { decodeId, encodeId } from '../../src/ids.js';
import { splitTableName } from '../../src/table-name.js';
import { classifyPgError, isDataError, pgConnection, quoteIdent as quote, quoteTable, textArrayLiteral } from '../../src/postgres.js';
import type { RowReader } from '../../src/types.js';
import { PAYLOAD_JSON, type Row, type RowReaderOptions } from '../../src/rows.js';
import { payloadJsonSql } from './payload-json.js';
import { exactNumber, isoUtc } from '../../src/payload.js';
import { queryStatements } from './query.js';
import { sortValues } from '../../src/table-query.js';


interface KeyColumn {
  name: string;
  /** SQL type to cast parameters to, e.g. `integer`, `character varying(20)`. */
  type: string;
  oid: number;
}

/** Type parsers of payload readers (RowReaderOptions.payloadValues): exact numbers, UTC timestamps. */
const PAYLOAD_PARSERS: Record<number, (text: string) => unknown> = {
  20: exactNumber, // int8
  1700: exactNumber, // numeric
  1082: (text) => text, // date: YYYY-MM-DD as it is (no time, no zone)
  1114: (text) => isoUtc(text) ?? text, // timestamp without time zone: read as UTC (the default parser reads it as local time)
  1184: (text) => (text.endsWith('+00') ? isoUtc(text.slice(0, -3)) : undefined) ?? isoOfYears1To9999(parseTimestamptz(text)) ?? text, // timestamptz
};

const parseTimestamptz = pg.types.getTypeParser(1184, 'text') as (text: string) => unknown;

/** ISO 8601 of a time in years 1–9999 (as isoUtc prints it); undefined for others (BC, past 9999, infinity). */
function isoOfYears1To9999(value: unknown): string | undefined {
  if (!(value instanceof Date)) return undefined;
  const year = value.getUTCFullYear();
  return year >= 1 && year <= 9999 ? value.toISOString() : undefined;
}
const payloadTypes = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    PAYLOAD_PARSERS[oid] ?? pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

export async function createPostgresReader(url: string, options: RowReaderOptions): Promise<RowReader> {
  const pool = new pg.Pool(
    pgConnection(url, { max: 2, application_name: `tributary:reader:${options.lens}`, ...(options.payloadValues ? { types: payloadTypes } : {}) }),
  );
  pool.on('error', () => {});
  const where = `lens "${options.lens}"`;
  const cols = await pool
    .query(
      `SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, a.atttypid::int AS oid, a.atttypmod AS typmod,
              COALESCE(a.attnum = ANY(i.indkey), false) AS in_pk, array_position(i.indkey::int2[], a.attnum) AS pk_pos
         FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
        WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`,
      [quoteTable(options.table)],
    )
    .then(
      (r) => r.rows,
      async (err) => {
        await pool.end();
        throw classifyPgError(err, where);
      },
    );
  if (cols.length === 0) {
    await pool.end();
    throw new SourceSetupError(`${where}: table ${options.table} does not exist (or the worker's role cannot see it)`);
  }
  const byName = new Map(cols.map((c) => [c.name as string, c]));
  const keyNames: string[] =
    options.primaryKey ?? cols.filter((c) => c.in_pk).sort((a, b) => a.pk_pos - b.pk_pos).map((c) => c.name as string);
  const columns = options.allColumns ? [...new Set([...cols.map((c) => c.name as string), ...options.columns])] : options.columns;
  const missing = [...keyNames, ...columns].filter((c) => !byName.has(c));
  if (keyNames.length === 0 || missing.length) {
    await pool.end();
    throw new SourceSetupError(
      keyNames.length === 0
        ? `${where}: table ${options.table} has no primary key; set primaryKey on the lens`
        : `${where}: column(s) ${missing.join(', ')} not in table ${options.table}; check fields, metadata, payload and changeTrackingColumn`,
    );
  }
  const key: KeyColumn[] = keyNames.map((n) => ({ name: n, type: byName.get(n)!.type, oid: byName.get(n)!.oid }));
  const tracking = options.changeTrackingColumn ? byName.get(options.changeTrackingColumn) : undefined;

  // Key columns in their output-function text (bool as t/f, as pgoutput sends them).
  const keyText = key.map((k, i) => `${k.oid === 16 ? `CASE WHEN ${quote(k.name)} THEN 't' ELSE 'f' END` : `${quote(k.name)}::text`} AS "__k${i}"`);
  const trackingText = tracking ? [`${quote(tracking.name)}::text AS "__cursor"`] : [];
  // A payload reader's rows are their payload's JSON (and the tracking column) when Postgres can build it.
  const types = new Map(cols.map((c) => [c.name as string, { oid: c.oid as number, typmod: c.typmod as number }]));
  const json = options.payloadValues ? payloadJsonSql(options.payloadFields ?? columns.map((c) => [c, c]), types) : undefined;
  const rowColumns = json ? (tracking ? [tracking.name as string] : []) : [...new Set(columns)];
  const select = `SELECT ${[...keyText, ...trackingText, ...rowColumns.map(quote), ...(json ? [`${json} AS "__payload"`] : [])].join(', ')} FROM ${quoteTable(options.table)}`;
  const keyList = key.map((k) => quote(k.name)).join(', ');
  const keyParams = (offset: number) => key.map((k, i) => `$${i + offset}::${k.type}`).join(', ');

  // A query's rows have the key's columns too; it may name the key's and the lens's columns.
  const queryNames = [...new Set([...keyNames, ...options.columns])];
  const queryColumns = [...keyText, ...queryNames.map(quote)].join(', ');
  const queryTypes = new Map(queryNames.map((n) => [n, byName.get(n)!.type as string]));

  const keyFields = key.map((_, i) => `__k${i}`);
  const keyOids = key.map((k) => k.oid);
  const idOf = (r: Record<string, unknown>) => encodeId(keyFields.map((f) => r[f] as string), keyOids);
  const pick = (r: Record<string, unknown>, columns: string[]) => {
    const row: Row = {};
    for (const c of columns) row[c] = r[c];
    return row;
  };
  /** A row of `select`: its columns, or its payload's JSON (and tracking column). */
  const rowOf = (r: Record<string, unknown>) => {
    const row = pick(r, rowColumns);
    if (json) row[PAYLOAD_JSON] = r.__payload as string;
    return row;
  };
  const toRow = (r: Record<string, unknown>) => ({ id: idOf(r), row: rowOf(r), cursor: r.__cursor as string | undefined });

  // Reads by id take one text[] parameter per key column (keyArrays).
  const unnestIds = `unnest(${key.map((_, i) => `$${i + 1}::text[]`).join(', ')})`;
  const byIdsSql = `${select} WHERE (${keyList}) IN (SELECT ${key.map((k, i) => `u.c${i}::${k.type}`).join(', ')} FROM ${unnestIds} AS u(${key.map((_, i) => `c${i}`).join(', ')}))`;
  // payloadsByIds: one row of all the payloads (\x1e never occurs in JSON text), in the ids' order;
  // a key column is NULL only where the LEFT JOIN found no row.
  const ord = '"__tributary_ord"';
  const keyAliases = key.map((_, i) => `"__tributary_k${i}"`);
  const payloadsSql =
    json &&
    `SELECT string_agg(CASE WHEN ${quote(key[0].name)} IS NULL THEN '' ELSE ${json} END, E'\\x1e' ORDER BY u.${ord}) AS payloads` +
      (tracking ? `, array_agg(${quote(tracking.name)}::text ORDER BY u.${ord}) AS tracking` : '') +
      ` FROM ${unnestIds} WITH ORDINALITY AS u(${keyAliases.join(', ')}, ${ord})` +
      ` LEFT JOIN ${quoteTable(options.table)} ON (${keyList}) = (${key.map((k, i) => `u.${keyAliases[i]}::${k.type}`).join(', ')})`;
  const parseTracking = tracking && (PAYLOAD_PARSERS[tracking.oid] ?? (pg.types.getTypeParser(tracking.oid, 'text') as (text: string) => unknown));

  async function query(text: string, values: unknown[]) {
    try {
      return (await pool.query(text, values)).rows;
    } catch (err) {
      if (isDataError(err)) throw new RecordRejectedError(`${where}: reading ${options.table} failed: ${describeError(err)}`, { cause: err });
      throw classifyPgError(err, `${where}: reading ${options.table} failed`);
    }
  }

  /** The ids as one `text[]` literal per key column. */
  const keyArrays = (ids: string[]) => {
    const columns: string[][] = key.map(() => []);
    for (const id of ids) decodeId(id, key.length).forEach((v, i) => columns[i].push(v));
    return columns.map(textArrayLiteral);
  };

  return {
    async readByIds(ids) {
      const rows = await query(byIdsSql, keyArrays(ids));
      const found = new Map<string, Row>();
      for (const r of rows) found.set(idOf(r), rowOf(r));
      return found;
    },

    ...(payloadsSql && {
      async payloadsByIds(ids: string[]) {
        const [r] = await query(payloadsSql, keyArrays(ids));
        const tracking = r.tracking as Array<string | null> | undefined;
        return { json: (r.payloads as string).split('\x1e'), tracking: tracking?.map((t) => (t === null ? null : parseTracking!(t))) };
      },
    }),

    async page({ after, limit, changedSince }) {
      if (changedSince) {
        if (!tracking) throw new SourceSetupError(`${where}: incremental sync needs changeTrackingColumn on the lens`);
        const col = quote(tracking.name);
        if (changedSince.value === undefined) {
          return (await query(`${select} WHERE ${col} IS NOT NULL ORDER BY ${col}, ${keyList} LIMIT ${limit}`, [])).map(toRow);
        }
        if (changedSince.id === undefined) {
          return (await query(`${select} WHERE ${col} > $1::${tracking.type} ORDER BY ${col}, ${keyList} LIMIT ${limit}`, [changedSince.value])).map(toRow);
        }
        const values = [changedSince.value, ...decodeId(changedSince.id, key.length)];
        return (
          await query(`${select} WHERE (${col}, ${keyList}) > ($1::${tracking.type}, ${keyParams(2)}) ORDER BY ${col}, ${keyList} LIMIT ${limit}`, values)
        ).map(toRow);
      }
      if (after === undefined) return (await query(`${select} ORDER BY ${keyList} LIMIT ${limit}`, [])).map(toRow);
      return (await query(`${select} WHERE (${keyList}) > (${keyParams(1)}) ORDER BY ${keyList} LIMIT ${limit}`, decodeId(after, key.length))).map(toRow);
    },

    async query(q) {
      const { rows, count } = queryStatements(q, queryColumns, quoteTable(options.table), keyNames, queryTypes);
      const [found, total] = await Promise.all([query(rows.text, rows.values), query(count.text, count.values)]);
      return {
        rows: found.map((r) => ({ id: idOf(r), row: pick(r, queryNames), sort: sortValues(r, q) })),
        total: total[0].total as number,
      };
    },

    async describeChangeTracking() {
      const column = options.changeTrackingColumn ?? '';
      const table = splitTableName(options.table, '"').name;
      const name = `${table}_${column}_tributary`.slice(0, 63);
      const createIndex = `CREATE INDEX CONCURRENTLY ${quote(name)} ON ${quoteTable(options.table)} (${quote(column)}, ${keyList})`;
      if (!tracking) return { exists: false, indexed: false, createIndex };
      // Any valid index whose first column is the tracking column serves the poll's range scan.
      const rows = await query(
        `SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = to_regclass($1) AND i.indisvalid AND a.attname = $2`,
        [quoteTable(options.table), column],
      );
      return { exists: true, indexed: rows.length > 0, createIndex };
    },

    async close() {
      await pool.end();
    },
  };
}
