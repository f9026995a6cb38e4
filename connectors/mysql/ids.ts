/** Row ids of MySQL and MariaDB keys, in the encoding src/ids.ts defines. */
import { encodeId } from '../../src/ids.js';

/**
 * MySQL/MariaDB key values, as the binlog connector (zongji) and the row reader (mysql2) both
 * see them with `dateStrings` and exact big numbers, in one text form: integers and DECIMALs
 * in their server text (`18446744073709551615`, `12.50`: every digit and the column's scale),
 * DATE/DATETIME/TIME as the server prints them (`2024-05-01 10:20:30.250000`; TIMESTAMP in
 * UTC), binary values
 * (BINARY, VARBINARY, BLOB) as `\x` and lowercase hex like Postgres's bytea, text as itself.
 */
export function mysqlKeyText(value: unknown): string {
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value === null || value === undefined) throw new RangeError('a key column is NULL');
  return JSON.stringify(value);
}

/** A MySQL id from key values in mysqlKeyText form; `numeric[i]`: column i is a number type. */
export function encodeMysqlId(values: string[], numeric: boolean[]): string {
  return encodeId(values, numeric.map((n) => (n ? 1700 : 25)));
}

/** MySQL column types whose values are numbers (a composite id writes them as JSON numbers). */
export function isMysqlNumericType(dataType: string): boolean {
  return /^(tinyint|smallint|mediumint|int|integer|bigint|decimal|numeric|float|double|real|year)$/i.test(dataType);
}
