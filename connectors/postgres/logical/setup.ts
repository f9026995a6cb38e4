/**
 * Everything the logical connector checks and creates before it streams: server settings,
 * privileges, lens tables and their keys, the publication and the slot. Every failure is a
 * SourceSetupError that says what to change.
 */
import pg from 'pg';
import { SourceSetupError } from '../../../src/errors.js';
import { pgTableName, quoteIdent, quoteTable } from '../../../src/postgres.js';
import type { PostgresSourceConfig } from '../spec.js';
import type { LensKey } from './pgoutput.js';

const MANAGED = 'managed by tributary';

export interface SetupResult {
  lensesByTable: Map<string, LensKey[]>;
  /** True when the slot did not exist and was created now. */
  slotCreated: boolean;
  /** What the user should know (and may fix) but does not stop streaming. */
  warnings: string[];
}

export async function setUpSource(
  client: pg.Client,
  sourceName: string,
  config: PostgresSourceConfig,
  lenses: Array<{ name: string; table: string; primaryKey?: string[] }>,
): Promise<SetupResult> {
  const where = `source "${sourceName}"`;
  const walLevel = (await client.query('SHOW wal_level')).rows[0].wal_level as string;
  if (walLevel !== 'logical') {
    throw new SourceSetupError(
      `${where}: wal_level is "${walLevel}", logical replication needs "logical". ` +
        'Run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL (on RDS or Aurora set ' +
        'rds.logical_replication = 1 in the parameter group), or use capture: trigger.',
    );
  }
  const role = await replicationRole(client);
  if (!role.may_replicate) {
    throw new SourceSetupError(
      `${where}: role "${role.name}" may not use replication. Run ALTER ROLE ${quoteIdent(role.name)} WITH REPLICATION ` +
        '(on RDS: GRANT rds_replication TO the role), or use capture: trigger.',
    );
  }

  const lensesByTable = new Map<string, LensKey[]>();
  const partitioned = new Set<string>();
  for (const lens of lenses) {
    const { keyColumns, isPartitioned } = await checkTable(client, where, lens);
    const list = lensesByTable.get(lens.table) ?? [];
    list.push({ lens: lens.name, keyColumns });
    lensesByTable.set(lens.table, list);
    if (isPartitioned) partitioned.add(lens.table);
  }
  const warnings = await ensurePublication(client, where, config.publication, [...lensesByTable.keys()], partitioned);
  const slotCreated = await ensureSlot(client, where, config.slot, config.failoverSlot ?? false);
  return { lensesByTable, slotCreated, warnings };
}

/** The current role and whether it may use replication (superuser, REPLICATION, or RDS's rds_replication). */
export async function replicationRole(client: pg.Client): Promise<{ name: string; may_replicate: boolean }> {
  return (
    await client.query(
      `SELECT current_user AS name, r.rolsuper OR r.rolreplication
              OR EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication'
                         AND pg_has_role(current_user, g.oid, 'member')) AS may_replicate
         FROM pg_roles r WHERE r.rolname = current_user`,
    )
  ).rows[0];
}

/** Checks a lens table and returns its key columns, and whether it is a partitioned table. */
async function checkTable(
  client: pg.Client,
  where: string,
  lens: { name: string; table: string; primaryKey?: string[] },
): Promise<{ keyColumns: string[]; isPartitioned: boolean }> {
  const rel = (
    await client.query(
      `SELECT c.oid, c.relreplident, c.relkind = 'p' AS partitioned,
              ARRAY(SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
              ARRAY(SELECT a.attname::text FROM pg_index i
                      JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
                      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.n) AS pk,
              ARRAY(SELECT a.attname::text FROM pg_index i
                      JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
                      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisreplident ORDER BY k.n) AS ident_index
         FROM pg_class c WHERE c.oid = to_regclass($1)`,
      [quoteTable(lens.table)],
    )
  ).rows[0];
  if (!rel) {
    throw new SourceSetupError(`${where}: table ${lens.table} of lens "${lens.name}" does not exist (or this role cannot see it).`);
  }
  const columns: string[] = rel.columns;
  const keyColumns: string[] = lens.primaryKey ?? rel.pk;
  if (keyColumns.length === 0) {
    throw new SourceSetupError(
      `${where}: table ${lens.table} of lens "${lens.name}" has no primary key. Add one, or set primaryKey: [...] ` +
        `on the lens and ALTER TABLE ${quoteTable(lens.table)} REPLICA IDENTITY FULL so deletes carry the key.`,
    );
  }
  const missing = keyColumns.filter((c) => !columns.includes(c));
  if (missing.length) {
    throw new SourceSetupError(`${where}: lens "${lens.name}": primaryKey column(s) ${missing.join(', ')} not in table ${lens.table}.`);
  }
  const identity: string[] =
    rel.relreplident === 'f' ? columns : rel.relreplident === 'i' ? rel.ident_index : rel.relreplident === 'd' ? rel.pk : [];
  const uncovered = keyColumns.filter((c) => !identity.includes(c));
  if (uncovered.length) {
    throw new SourceSetupError(
      `${where}: the replica identity of ${lens.table} does not include key column(s) ${uncovered.join(', ')} of lens ` +
        `"${lens.name}", so deletes could not be matched. Run ALTER TABLE ${quoteTable(lens.table)} REPLICA IDENTITY FULL ` +
        '(or USING INDEX on a unique index of the key).',
    );
  }
  return { keyColumns, isPartitioned: rel.partitioned };
}

/**
 * Creates the publication, or keeps a Tributary-owned one in step with the lens tables, or
 * checks a user's one covers them; returns warnings for the log. Tributary's publications name
 * the lens tables and publish a partitioned one's leaf partitions under their own names (not
 * via the root: PostgreSQL does not publish a TRUNCATE of a single partition through the root),
 * which the decoder routes to the root's lens (./routes.ts).
 */
async function ensurePublication(client: pg.Client, where: string, name: string, tables: string[], partitioned: Set<string>): Promise<string[]> {
  const viaRootSupported = Number((await client.query('SHOW server_version_num')).rows[0].server_version_num) >= 130000;
  const pub = (
    await client.query(
      `SELECT obj_description(p.oid, 'pg_publication') AS comment, p.puballtables,
              ${viaRootSupported ? 'p.pubviaroot' : 'false'} AS via_root,
              ARRAY(SELECT json_build_array(schemaname, tablename)::text FROM pg_publication_tables t WHERE t.pubname = p.pubname) AS tables,
              ARRAY(SELECT json_build_array(n.nspname, c.relname)::text FROM pg_publication_rel r
                      JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE r.prpubid = p.oid) AS members
         FROM pg_publication p WHERE p.pubname = $1`,
      [name],
    )
  ).rows[0];
  const tableList = tables.map(quoteTable).join(', ');
  const names = (rows: string[]) => new Set(rows.map((t) => pgTableName(...(JSON.parse(t) as [string, string]))));
  try {
    if (!pub) {
      await client.query(`CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${tableList}`);
      await client.query(`COMMENT ON PUBLICATION ${quoteIdent(name)} IS '${MANAGED}'`);
      return [];
    }
    if (pub.comment === MANAGED) {
      if (pub.via_root) await client.query(`ALTER PUBLICATION ${quoteIdent(name)} SET (publish_via_partition_root = false)`);
      const members = names(pub.members);
      const missing = tables.filter((t) => !members.has(t));
      const extra = [...members].filter((t) => !tables.includes(t));
      if (missing.length || extra.length) await client.query(`ALTER PUBLICATION ${quoteIdent(name)} SET TABLE ${tableList}`);
      return [];
    }
    if (!pub.puballtables) await checkUserPublication(client, where, name, tables, partitioned, names(pub.tables));
    return pub.via_root && partitioned.size
      ? [
          `publication "${name}" publishes via the partition root: PostgreSQL does not publish a TRUNCATE of a single partition ` +
            `of ${[...partitioned].join(', ')} through it, so Tributary cannot see one. Run ALTER PUBLICATION ${quoteIdent(name)} ` +
            'SET (publish_via_partition_root = false), or after such a TRUNCATE run tributary ingest LENS --mode full (or set smartSyncInterval).',
        ]
      : [];
  } catch (err) {
    if ((err as { code?: string }).code === '42501') {
      throw new SourceSetupError(
        `${where}: not allowed to create or change publication "${name}" (${(err as Error).message}). Ask the table owner ` +
          `or a superuser to run CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${tableList}, then restart.`,
        { cause: err },
      );
    }
    throw err;
  }
}

/**
 * A publication not created by Tributary must publish every lens table: the table itself, or
 * for a partitioned table either its root or every one of its leaf partitions (their changes
 * are routed to the root's lens). Anything else would be a silent gap: a SourceSetupError.
 */
async function checkUserPublication(
  client: pg.Client,
  where: string,
  name: string,
  tables: string[],
  partitioned: Set<string>,
  published: Set<string>,
): Promise<void> {
  const missing: string[] = [];
  for (const table of tables.filter((t) => !published.has(t))) {
    const leaves = partitioned.has(table) ? await leafPartitions(client, table) : [];
    const unpublished = leaves.filter((leaf) => !published.has(leaf));
    if (leaves.length === 0 || unpublished.length) missing.push(leaves.length ? `${table} (partitions ${unpublished.join(', ')} are not published)` : table);
  }
  if (!missing.length) return;
  const roots = tables.filter((t) => missing.some((m) => m === t || m.startsWith(`${t} (`)));
  throw new SourceSetupError(
    `${where}: publication "${name}" (not created by Tributary) does not include ${missing.join(', ')}. ` +
      `Run ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${roots.map(quoteTable).join(', ')}` +
      ', or leave publication: unset so Tributary manages its own.',
  );
}

/** The leaf partitions of a partitioned table, at any depth (canonical names). */
async function leafPartitions(client: pg.Client, table: string): Promise<string[]> {
  const rows = (
    await client.query(
      `SELECT n.nspname AS schema, c.relname AS name FROM pg_partition_tree(to_regclass($1)) t
         JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf`,
      [quoteTable(table)],
    )
  ).rows;
  return rows.map((r) => pgTableName(r.schema, r.name));
}

/** failoverSlot: true needs PostgreSQL 17, the first with pg_create_logical_replication_slot(…, failover). */
async function checkFailoverSupported(client: pg.Client, where: string): Promise<void> {
  const version = Number((await client.query('SHOW server_version_num')).rows[0].server_version_num);
  if (version >= 170000) return;
  throw new SourceSetupError(
    `${where}: failoverSlot: true needs PostgreSQL 17 or later (this server is ${Math.floor(version / 10000)}), ` +
      'the first whose replication slots can be synchronized to a standby. Remove failoverSlot (or set it to false), ' +
      'or upgrade the server.',
  );
}

async function ensureSlot(client: pg.Client, where: string, slot: string, failover: boolean): Promise<boolean> {
  if (failover) await checkFailoverSupported(client, where);
  const existing = (
    await client.query(
      `SELECT s.*, s.database = current_database() AS same_db FROM pg_replication_slots s WHERE s.slot_name = $1`,
      [slot],
    )
  ).rows[0];
  if (existing) {
    if (existing.slot_type !== 'logical' || existing.plugin !== 'pgoutput' || !existing.same_db) {
      throw new SourceSetupError(
        `${where}: replication slot "${slot}" exists but is not a pgoutput logical slot of this database ` +
          `(it is a ${existing.slot_type} slot, plugin ${existing.plugin ?? 'none'}, database ${existing.database ?? 'none'}). ` +
          'Set slot: to another name on this source, or drop that slot if nothing uses it.',
      );
    }
    if (failover && existing.failover !== true) {
      throw new SourceSetupError(
        `${where}: replication slot "${slot}" exists without failover, and failoverSlot is true. On a replication ` +
          `connection (psql "dbname=… replication=database") run ALTER_REPLICATION_SLOT ${slot} (FAILOVER true), ` +
          'or drop the slot while Tributary is stopped so it is created again (the lenses then resync).',
      );
    }
    return false;
  }
  try {
    if (failover) await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)`, [slot]);
    else await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  } catch (err) {
    if ((err as { code?: string }).code === '42710') return false; // created concurrently by a standby
    if ((err as { code?: string }).code === '53400') {
      throw new SourceSetupError(
        `${where}: cannot create replication slot "${slot}": all max_replication_slots are in use. ` +
          'Drop unused slots (SELECT * FROM pg_replication_slots) or raise max_replication_slots.',
        { cause: err },
      );
    }
    throw err;
  }
  return true;
}
