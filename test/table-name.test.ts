/** The table name parser: every spelling a user may write, the canonical form, and round trips. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { columnName, formatTableName, parseTableName, qualifyTableName, splitTableName } from '../src/table-name.js';
import { quoteTable } from '../src/postgres.js';

test('postgres spellings parse to schema and name; the canonical form quotes only what needs it', () => {
  const cases: Array<[string, string]> = [
    ['products', 'public.products'],
    ['public.products', 'public.products'],
    ['"public"."products"', 'public.products'],
    ['Sales.Orders', 'Sales.Orders'],
    ['"Sales"."Order Items"', 'Sales."Order Items"'],
    ['"Order Items"', 'public."Order Items"'],
    ['app."my.table"', 'app."my.table"'],
    ['"say ""hi"""."t"', '"say ""hi""".t'],
  ];
  for (const [written, canonical] of cases) {
    assert.equal(qualifyTableName(written, 'public', '"'), canonical, written);
    assert.equal(qualifyTableName(canonical, 'public', '"'), canonical, `${canonical} is a fixed point`);
  }
  assert.deepEqual(splitTableName('"say ""hi""".t', '"'), { schema: 'say "hi"', name: 't' });
  assert.equal(quoteTable('Sales."Order Items"'), '"Sales"."Order Items"');
  assert.equal(quoteTable('"say ""hi""".t'), '"say ""hi"""."t"');
});

test('mysql spellings use backticks', () => {
  assert.equal(qualifyTableName('`Order Items`', 'shop', '`'), 'shop.`Order Items`');
  assert.equal(qualifyTableName('shop.`a``b`', 'x', '`'), 'shop.`a``b`');
  assert.deepEqual(splitTableName('shop.`a``b`', '`'), { schema: 'shop', name: 'a`b' });
  assert.equal(formatTableName({ schema: 'shop', name: 'items' }, '`'), 'shop.items');
});

test('malformed names are refused', () => {
  for (const bad of ['', 'a.b.c', '"unclosed', '"a"b', 'a..b', '"".t', 'has space', 'a.']) {
    assert.equal(parseTableName(bad, '"'), undefined, JSON.stringify(bad));
  }
  assert.equal(parseTableName('`x y`', '"'), undefined, 'backticks are not Postgres quotes');
});

test('column names: surrounding quotes are optional', () => {
  assert.equal(columnName('Order Id'), 'Order Id');
  assert.equal(columnName('"Order Id"'), 'Order Id');
  assert.equal(columnName('"Say ""hi"""'), 'Say "hi"');
  assert.equal(columnName('`Say ``hi```'), 'Say `hi`');
  assert.equal(columnName('a"b'), 'a"b');
});
