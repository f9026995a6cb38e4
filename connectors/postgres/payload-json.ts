/**
 * A payload row's JSON built by Postgres (RowReaderOptions.payloadFields): the reader of a
 * payload sink selects one JSON text a row instead of its columns, so the daemon neither parses
 * the columns nor encodes them again. Each value is what src/payload.ts's `encodeValue` makes
 * of the column as the payload reader parses it (connectors/postgres/reader.ts):
 *
 * - int8 and numeric: a JSON number when the nearest double prints back as the same value, as
 *   JavaScript prints it (plain, not exponent, notation: 1e-6 ≤ |v| < 1e21, or 0), else the text;
 * - timestamps (years 1–9999): ISO 8601 UTC to the millisecond (truncated), else the text;
 * - date: its text; bytea: base64 on one line; json and jsonb: as they are;
 * - float4 and float8: JSON numbers, null for NaN and the infinities;
 * - bool, int2, int4, text, varchar, char, uuid: as Postgres's own JSON has them.
 *
 * A type not listed (arrays, intervals, money, geometry…) has no SQL here: such a lens's rows
 * are read as columns and encoded in JavaScript.
 */
import { quoteIdent as quote } from '../../src/postgres.js';

const AS_IS = new Set([16, 21, 23, 25, 114, 1042, 1043, 2950, 3802]);
const ISO_MS = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`;

/** The JSON value of one column of type `oid`, or undefined when no SQL matches encodeValue. */
function valueSql(column: string, oid: number): string | undefined {
  const c = quote(column);
  if (AS_IS.has(oid)) return c;
  switch (oid) {
    case 20: // int8
    case 1700: // numeric
      return `CASE WHEN ${exactSql(`${c}::numeric`)} THEN to_json(${c}) ELSE to_json(${c}::text) END`;
    case 700: // float4
    case 701: // float8: NaN and infinities are not JSON numbers (JSON.stringify makes them null)
      return `CASE WHEN ${c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE ${c} END`;
    case 17: // bytea
      return `translate(encode(${c}, 'base64'), E'\\n', '')`;
    case 1082: // date
      return `${c}::text`;
    case 1114: // timestamp: its own time, taken as UTC
      return isoSql(c, c);
    case 1184: // timestamptz
      return isoSql(c, `(${c} AT TIME ZONE 'UTC')`);
    default:
      return undefined;
  }
}

/** Whether numeric `v` is a JSON number as exactNumber decides: its nearest double prints back as v. */
function exactSql(v: string): string {
  return `(${v} <> 'NaN' AND abs(${v}) < 1e21 AND (${v} = 0 OR abs(${v}) >= 1e-6) AND ${v}::float8::text::numeric = ${v})`;
}

/** `utc` (a timestamp without zone, in UTC) as ISO 8601 when its year is 1–9999, else `c`'s text. */
function isoSql(c: string, utc: string): string {
  return `CASE WHEN ${utc} >= '0001-01-01' AND ${utc} < '10000-01-01' THEN to_char(${utc}, ${ISO_MS}) ELSE ${c}::text END`;
}

/**
 * The SQL of a row's payload JSON text: `fields` are `[outField, column]` in order, `types` each
 * column's type oid. Undefined when a column's type has no SQL here.
 */
export function payloadJsonSql(fields: Array<[string, string]>, types: Map<string, number>): string | undefined {
  const values: string[] = [];
  for (const [field, column] of fields) {
    const value = valueSql(column, types.get(column)!);
    if (value === undefined) return undefined;
    values.push(`${value} AS ${quote(field)}`);
  }
  return `(SELECT row_to_json(p) FROM (SELECT ${values.join(', ')}) p)::text`;
}
