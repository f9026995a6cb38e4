/** The coalescer: the last action per id wins, rows travel with their last change, bytes are bounded. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Coalescer } from '../src/coalescer.js';

test('the last action and the last row of an id win; a delete drops the row; bytes return to zero once taken', () => {
  const c = new Coalescer();
  assert.equal(c.add('1', 'upsert', 100, 1, 0, { id: 1, name: 'a' }), true, 'the first change starts the buffer');
  c.add('2', 'upsert', 101, 1, 0, { id: 2, name: 'b' });
  c.add('1', 'upsert', 102, 2, 0, { id: 1, name: 'a, again' });
  c.add('2', 'delete', 103, 2, 0, null);
  c.add('3', 'upsert', 104, 2, 0);
  const withRows = c.bytes;
  assert.ok(withRows > 0);
  assert.deepEqual(c.take(10), {
    firstTick: 1,
    changes: [
      { id: '1', action: 'upsert', committedAt: 102, row: { id: 1, name: 'a, again' } },
      { id: '2', action: 'delete', committedAt: 103 },
      { id: '3', action: 'upsert', committedAt: 104 },
    ],
  });
  assert.equal(c.bytes, 0);
  assert.equal(c.size, 0);
});

test('a partial take keeps the rest, their rows and their bytes', () => {
  const c = new Coalescer();
  for (let i = 1; i <= 4; i++) c.add(String(i), 'upsert', i, 1, 0, { note: 'x'.repeat(1000) });
  const before = c.bytes;
  const { changes } = c.take(3);
  assert.deepEqual(changes.map((ch) => ch.id), ['1', '2', '3']);
  assert.ok(c.bytes > 1000 && c.bytes < before / 2, `the kept row's bytes stay counted (${c.bytes} of ${before})`);
  assert.deepEqual(c.take(10).changes, [{ id: '4', action: 'upsert', committedAt: 4, row: { note: 'x'.repeat(1000) } }]);
  assert.equal(c.bytes, 0);
});
