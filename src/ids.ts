/**
 * Row ids (docs/architecture.md, "Ids"): a one-column key is its value as text (`42`, `p_7712`); a
 * composite key is the JSON array of its values in key order (`[7,"eu"]`), numbers as
 * numbers, booleans as booleans, everything else as strings. Values come in Postgres's text
 * form, with the type OID of their column.
 */

import { RecordRejectedError } from './errors.js';

/** Types whose text form is already a JSON number (when it looks like one: not NaN, Infinity). */
const NUMERIC_TYPES = new Set([20, 21, 23, 26, 700, 701, 1700]);
const BOOL_TYPE = 16;
const JSON_NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

export function encodeId(values: string[], types: number[]): string {
  if (values.length === 1) return values[0];
  let out = '[';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const v = values[i];
    const t = types[i];
    if (NUMERIC_TYPES.has(t) && JSON_NUMBER.test(v)) out += v;
    else if (t === BOOL_TYPE) out += v === 't' ? 'true' : 'false';
    else out += JSON.stringify(v);
  }
  return out + ']';
}

/**
 * The key values of an id, as text Postgres can cast to the column types (`true`/`false` for
 * booleans; numbers keep every digit). Throws a RecordRejectedError when a composite id is not a JSON
 * array of `keyLength` scalar values.
 */
export function decodeId(id: string, keyLength: number): string[] {
  if (keyLength === 1) return [id];
  const bad = () => new RecordRejectedError(`id ${JSON.stringify(id)} is not a JSON array of ${keyLength} key values`);
  if (id[0] !== '[' || id[id.length - 1] !== ']') throw bad();
  const values: string[] = [];
  let i = 1;
  while (i < id.length - 1) {
    if (id[i] === '"') {
      let end = i + 1;
      while (end < id.length && id[end] !== '"') end += id[end] === '\\' ? 2 : 1;
      values.push(JSON.parse(id.slice(i, end + 1)));
      i = end + 1;
    } else {
      const end = id.indexOf(',', i) < 0 ? id.length - 1 : id.indexOf(',', i);
      const token = id.slice(i, end).trim();
      if (!/^(true|false|-?\d+(\.\d+)?([eE][+-]?\d+)?)$/.test(token)) throw bad();
      values.push(token);
      i = end;
    }
    if (id[i] === ',') i++;
    else if (i !== id.length - 1) throw bad();
  }
  if (values.length !== keyLength) throw bad();
  return values;
}
