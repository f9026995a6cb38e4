import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres } from './helpers/postgres.js';

test('throwaway postgres starts with wal_level=logical', async () => {
  const pg = await startPostgres();
  try {
    const rows = await pg.query(pg.url(), 'SHOW wal_level');
    assert.equal(rows[0].wal_level, 'logical');
  } finally {
    await pg.stop();
  }
});
