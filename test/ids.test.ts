import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordRejectedError } from '../src/errors.js';
import { decodeId, encodeId } from '../src/ids.js';

test('one-column ids are the value as text', () => {
  assert.equal(encodeId(['42'], [23]), '42');
  assert.equal(encodeId(['p_7712'], [25]), 'p_7712');
  assert.deepEqual(decodeId('p_7712', 1), ['p_7712']);
});

test('composite ids are JSON arrays in key order and decode back exactly', () => {
  const cases: Array<[string[], number[], string]> = [
    [['7', 'eu'], [23, 25], '[7,"eu"]'],
    [['12345678901234567890', 'x'], [1700, 25], '[12345678901234567890,"x"]'],
    [['t', 'a"b,c]'], [16, 25], '[true,"a\\"b,c]"]'],
    [['NaN', '-1.5e3'], [701, 701], '["NaN",-1.5e3]'],
  ];
  for (const [values, types, id] of cases) {
    assert.equal(encodeId(values, types), id);
    assert.deepEqual(
      decodeId(id, values.length),
      values.map((v, i) => (types[i] === 16 ? (v === 't' ? 'true' : 'false') : v)),
    );
  }
  assert.throws(() => decodeId('[1,2]', 3), /not a JSON array of 3 key values/);
  assert.throws(() => decodeId('7', 2), RecordRejectedError);
});
