/**
 * Routes relations to lens tables for the logical decoder. pgoutput names the relation a row
 * was written in: the partitioned root when the publication publishes via the root, otherwise
 * the leaf partition; an inheritance child always under its own name. A relation's lens table
 * is the relation itself or its nearest ancestor (pg_inherits, which holds partitions at every
 * depth and inheritance parents) that a lens reads. pgoutput sends a relation's Relation message
 * before its first change in each stream and again after its definition changes (ATTACH and
 * DETACH PARTITION included), so asking the server on each one costs a query per relation per
 * stream and always answers with the relation's current place: a partition created or attached
 * later, or while the daemon was down, is routed to its root's lens, a detached one no more.
 */
import pg from 'pg';
import { pgTableName } from '../../../src/postgres.js';
import type { RelationRouter } from './pgoutput.js';

/** A RelationRouter over `lensTables`, asking the server through `pool` about any other relation. */
export function relationRouter(pool: pg.Pool, lensTables: ReadonlySet<string>): RelationRouter {
  return (relId, table) => (lensTables.has(table) ? table : lensTableOf(pool, relId, lensTables));
}

/** The nearest ancestor of relation `relId` (itself included) that is a lens table, or null. */
export async function lensTableOf(pool: pg.Pool, relId: number, lensTables: ReadonlySet<string>): Promise<string | null> {
  const rows = (
    await pool.query(
      `WITH RECURSIVE up(oid, depth) AS (
         SELECT $1::oid, 0
         UNION ALL
         SELECT i.inhparent, up.depth + 1 FROM pg_inherits i JOIN up ON i.inhrelid = up.oid WHERE up.depth < 64)
       SELECT n.nspname AS schema, c.relname AS name
         FROM up JOIN pg_class c ON c.oid = up.oid JOIN pg_namespace n ON n.oid = c.relnamespace
        ORDER BY up.depth`,
      [relId],
    )
  ).rows as Array<{ schema: string; name: string }>;
  for (const row of rows) {
    const table = pgTableName(row.schema, row.name);
    if (lensTables.has(table)) return table;
  }
  return null;
}
