/**
 * How MySQL and MariaDB statements spell names and parameters: quoted identifiers, and
 * parameters cast so that a value in the text form of connectors/mysql/ids.ts (an id's key
 * value, a Query's where or sort value) compares exactly with its column.
 */

/** What a parameter's SQL depends on: the column's DATA_TYPE and COLUMN_TYPE, lowercase. */
export interface ColumnType {
  dataType: string;
  columnType: string;
}

export const quoteMysql = (name: string) => `\`${name.replace(/`/g, '``')}\``;

export const isBinaryType = (column: ColumnType) => /binary|blob/.test(column.dataType);

/** SQL for one parameter: casts that keep every digit, hex for binary columns. */
export function keyParam(column: ColumnType): string {
  if (/int$/.test(column.dataType)) return column.columnType.includes('unsigned') ? 'CAST(? AS UNSIGNED)' : 'CAST(? AS SIGNED)';
  if (column.dataType === 'decimal' || column.dataType === 'numeric') {
    const [p, s] = (/\((\d+)(?:,(\d+))?\)/.exec(column.columnType) ?? []).slice(1);
    return `CAST(? AS DECIMAL(${p ?? 65},${s ?? 0}))`;
  }
  if (isBinaryType(column)) return 'UNHEX(?)';
  return '?';
}

/** A value in id text form as the parameter keyParam expects (binary: the hex without `\x`). */
export function paramValue(column: ColumnType, text: string): string {
  return isBinaryType(column) && text.startsWith('\\x') ? text.slice(2) : text;
}
