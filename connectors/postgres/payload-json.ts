/**
 * A payload row's JSON built by Postgres (RowReaderOptions.payloadFields): the reader of a
 * payload sink selects one JSON text a row instead of its columns, so the daemon neither parses
 * the columns nor encodes them again. Each value is what src/payload.ts's `encodeValue` makes
 * of the column as the payload reader parses it (connectors/postgres/reader.ts):
 *
 * - int8 and numeric: a JSON number when the nearest double prints back as the same value, as
 *   JavaScript prints it (plain, not exponent, notation: 1e-6 ≤ |v| < 1e21, or 0), else the text.
 *   An int8 within ±2^53 and a numeric(p, s) with p ≤ 15 and 0 ≤ s ≤ 6 always are (but NaN);
 * - timestamps (years 1–9999): ISO 8601 UTC to the millisecond (truncated), else the text;
 * - date: its text; bytea: base64 on one line; json and jsonb: as they are;
 * - float4 and float8: JSON numbers, null for NaN and the infinities;
 * - bool, int2, int4, text, varchar, char, uuid: as Postgres's own JSON has them.
 *
 * The row's JSON is one text concatenation (`'{"id":' || … || '}'`): about half the work of
 * `row_to_json` on a subselect. A type not listed (arrays, intervals, money, geometry…) has no
 * SQL here: such a lens's rows are read as columns and encoded in JavaScript.
 */
import pg from 'pg';
import { quoteIdent as quote } from '../../src/postgres.js';

/** A column's type: its oid and type modifier (`pg_attribute.atttypmod`, -1 for none). */
export interface ColumnType {
  oid: number;
  typmod: number;
}

const NUMBER_TEXT = new Set([16, 21, 23]); // bool, int2, int4: their text is their JSON
const STRING = new Set([25, 1042, 1043, 2950]); // text, char, varchar, uuid: a JSON string
const JSON_TEXT = new Set([114, 3802]); // json, jsonb
const ISO_MS = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`;
/** 2^53: every integer up to it is a double JavaScript prints back as it is. */
const SAFE_INTEGER = '9007199254740992';

/** The JSON text of one column's value (NULL when the value is), or undefined when no SQL matches encodeValue. */
function valueSql(column: string, { oid, typmod }: ColumnType): string | undefined {
  const c = quote(column);
  const asString = (text: string) => `to_json(${text})::text`;
  if (NUMBER_TEXT.has(oid) || JSON_TEXT.has(oid)) return `${c}::text`;
  if (STRING.has(oid)) return asString(c);
  switch (oid) {
    case 20: // int8
      return `CASE WHEN ${c} BETWEEN -${SAFE_INTEGER} AND ${SAFE_INTEGER} OR ${exactSql(`${c}::numeric`)} THEN ${c}::text ELSE ${asString(`${c}::text`)} END`;
    case 1700: // numeric
      return numericFitsDouble(typmod)
        ? `CASE WHEN ${c} = 'NaN' THEN '"NaN"' ELSE ${c}::text END`
        : `CASE WHEN ${exactSql(c)} THEN ${c}::text ELSE ${asString(`${c}::text`)} END`;
    case 700: // float4
    case 701: // float8: NaN and infinities are not JSON numbers (JSON.stringify makes them null)
      return `CASE WHEN ${c} IN ('NaN', 'Infinity', '-Infinity') THEN 'null' ELSE ${c}::text END`;
    case 17: // bytea
      return `'"' || translate(encode(${c}, 'base64'), E'\\n', '') || '"'`;
    case 1082: // date
      return asString(`${c}::text`);
    case 1114: // timestamp: its own time, taken as UTC
      return isoSql(c, `${c} >= '0001-01-01' AND ${c} < '10000-01-01'`, c);
    case 1184: // timestamptz
      return isoSql(c, `${c} >= '0001-01-01 00:00:00+00' AND ${c} < '10000-01-01 00:00:00+00'`, `${c} AT TIME ZONE 'UTC'`);
    default:
      return undefined;
  }
}

/**
 * Whether every value of a numeric(p, s) but NaN is a number exactNumber keeps: at most 15
 * significant digits (a double holds them exactly) and no more than 6 decimals (JavaScript
 * prints 1e-7 in exponent notation).
 */
function numericFitsDouble(typmod: number): boolean {
  if (typmod < 0) return false; // unconstrained
  const precision = ((typmod - 4) >> 16) & 0xffff;
  const scale = (((typmod - 4) & 0x7ff) ^ 1024) - 1024; // signed since PostgreSQL 15
  return precision <= 15 && scale >= 0 && scale <= 6;
}

/** Whether numeric `v` is a JSON number as exactNumber decides: its nearest double prints back as v. */
function exactSql(v: string): string {
  return `(${v} <> 'NaN' AND abs(${v}) < 1e21 AND (${v} = 0 OR abs(${v}) >= 1e-6) AND ${v}::float8::text::numeric = ${v})`;
}

/** `utc` (a timestamp without zone, in UTC) as an ISO 8601 JSON string when `inYears1To9999`, else `c`'s text. */
function isoSql(c: string, inYears1To9999: string, utc: string): string {
  return `CASE WHEN ${inYears1To9999} THEN '"' || to_char(${utc}, ${ISO_MS}) || '"' ELSE to_json(${c}::text)::text END`;
}

/**
 * The SQL of a row's payload JSON text: `fields` are `[outField, column]` in order, `types` each
 * column's type. Undefined when a column's type has no SQL here.
 */
export function payloadJsonSql(fields: Array<[string, string]>, types: Map<string, ColumnType>): string | undefined {
  const parts: string[] = [];
  for (const [i, [field, column]] of fields.entries()) {
    const value = valueSql(column, types.get(column)!);
    if (value === undefined) return undefined;
    parts.push(pg.escapeLiteral(`${i === 0 ? '{' : ','}${JSON.stringify(field)}:`), `COALESCE(${value}, 'null')`);
  }
  return `(${parts.length ? parts.join(' || ') : "'{'"} || '}')`;
}
