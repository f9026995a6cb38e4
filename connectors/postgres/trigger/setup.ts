/**
 * What trigger capture installs, checks and removes. Everything lives in one schema
 * (`triggerSchema`, default `tributary`):
 *
 * - `changelog`: one row per row change (source, seq, table, key as text[], action u|d|t, time). Sources sharing the schema each read and delete only
 *   their own rows (`source` column).
 * - per source and table, a SECURITY DEFINER function `capture_<hash>` (so writers of the table
 *   need no privilege on the changelog) fired by two triggers on the table:
 *   `tributary_<source>_row` (AFTER INSERT/UPDATE/DELETE FOR EACH ROW: records the key; an
 *   update that changes the key records a delete of the old key) and `tributary_<source>_stmt`
 *   (AFTER INSERT/UPDATE/DELETE/TRUNCATE FOR EACH STATEMENT: records truncates and sends one
 *   NOTIFY per statement, which Postgres folds to one per transaction, and only while the reader
 *   sleeps: see `sleepLock`).
 *
 * Keys are stored as the key columns' text output (booleans as t/f), as pgoutput sends them,
 * so ids are encoded exactly as the logical connector and the row readers encode them.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { SourceSetupError } from '../../../src/errors.js';
import { quoteIdent, quoteTable } from '../../../src/postgres.js';
import { splitTableName } from '../../../src/table-name.js';

const BOOL = 16;

/** A lens table and the key columns every lens of the source reading it needs. */
export interface CaptureTable {
  /** Canonical `schema.table` (src/table-name.ts). */
  table: string;
  /** A partitioned table: its row triggers are cloned to every partition, its TRUNCATE trigger is not. */
  partitioned?: boolean;
  /** Union of the lenses' key columns: what the trigger records, in this order. */
  columns: string[];
  /** Type OID of each of `columns`. */
  types: number[];
  /** Each lens reading the table, with the positions of its key columns in `columns`. */
  lenses: Array<{ lens: string; positions: number[] }>;
}

export interface LensRef {
  name: string;
  table: string;
  primaryKey?: string[];
}

const quoteLiteral = (text: string) => `'${text.replace(/'/g, "''")}'`;
/** Identifiers longer than 63 bytes would be cut by Postgres; cut them the same way here. */
const ident63 = (name: string) => Buffer.from(name).subarray(0, 63).toString();

export const triggerNames = (source: string) => ({
  row: ident63(`tributary_${source}`.slice(0, 58) + '_row'),
  stmt: ident63(`tributary_${source}`.slice(0, 58) + '_stmt'),
});
export const channelName = (schema: string, source: string) => ident63(`${schema}_${source}`);
/**
 * The advisory lock key the reader holds only while it sleeps waiting for a NOTIFY. A NOTIFY
 * serialises the commits of every transaction that sends one, so writers send it only when
 * they cannot take this lock shared (the reader sleeps); while the reader is busy, they take
 * it shared until they commit, and the reader cannot go to sleep before they have.
 */
export const sleepLock = (schema: string, source: string) =>
  BigInt.asIntN(64, BigInt(`0x${createHash('sha1').update(`${schema}\0${source}`).digest('hex').slice(0, 16)}`)).toString();
const functionName = (source: string, table: string) =>
  `capture_${createHash('sha1').update(`${source}\0${table}`).digest('hex').slice(0, 12)}`;

/** Reads each lens table's key columns and groups lenses by table. */
export async function resolveTables(client: pg.Client, where: string, lenses: LensRef[]): Promise<CaptureTable[]> {
  const tables = new Map<string, CaptureTable>();
  for (const lens of lenses) {
    const rel = (
      await client.query(
        `SELECT ARRAY(SELECT a.attname::text FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns,
                ARRAY(SELECT a.atttypid::int FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS types,
                ARRAY(SELECT a.attname::text FROM pg_index i
                        JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
                        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                       WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.n) AS pk,
                ARRAY(SELECT i.inhrelid::regclass::text FROM pg_inherits i WHERE i.inhparent = c.oid AND c.relkind = 'r') AS children,
                c.relkind = 'p' AS partitioned
           FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`,
        [quoteTable(lens.table)],
      )
    ).rows[0];
    if (!rel) throw new SourceSetupError(`${where}: table ${lens.table} of lens "${lens.name}" does not exist (or this role cannot see it).`);
    if (rel.children.length) {
      // Row triggers of an inheritance parent do not fire for its children's rows: a silent gap.
      throw new SourceSetupError(
        `${where}: table ${lens.table} of lens "${lens.name}" has inheritance children (${rel.children.join(', ')}) whose changes ` +
          'its triggers would not see. Use capture: logical (a child\'s changes go to its parent\'s lens) or capture: poll ' +
          '(a declaratively partitioned table is captured whole by triggers).',
      );
    }
    const keyColumns: string[] = lens.primaryKey ?? rel.pk;
    if (keyColumns.length === 0) {
      throw new SourceSetupError(`${where}: table ${lens.table} of lens "${lens.name}" has no primary key. Add one, or set primaryKey: [...] on the lens.`);
    }
    const missing = keyColumns.filter((c) => !rel.columns.includes(c));
    if (missing.length) throw new SourceSetupError(`${where}: lens "${lens.name}": primaryKey column(s) ${missing.join(', ')} not in table ${lens.table}.`);
    const entry: CaptureTable = tables.get(lens.table) ?? { table: lens.table, partitioned: rel.partitioned, columns: [], types: [], lenses: [] };
    for (const column of keyColumns) {
      if (entry.columns.includes(column)) continue;
      entry.columns.push(column);
      entry.types.push(rel.types[rel.columns.indexOf(column)]);
    }
    entry.lenses.push({ lens: lens.name, positions: keyColumns.map((c) => entry.columns.indexOf(c)) });
    tables.set(lens.table, entry);
  }
  return [...tables.values()];
}

/**
 * What keeps this role from installing trigger capture, each with the GRANT that fixes it
 * (empty: nothing). Needs CREATE on the schema (on the database when the schema does not
 * exist yet), USAGE on each table's schema and TRIGGER on each table.
 */
export async function installProblems(client: pg.Client, schema: string, tables: string[]): Promise<string[]> {
  const problems: string[] = [];
  const r = (
    await client.query(
      `SELECT current_user AS role, current_database() AS db,
              to_regnamespace($1) IS NOT NULL AS schema_exists,
              CASE WHEN to_regnamespace($1) IS NOT NULL THEN has_schema_privilege($1, 'CREATE') END AS schema_create,
              has_database_privilege(current_database(), 'CREATE') AS db_create,
              current_setting('server_version_num')::int AS version`,
      [schema],
    )
  ).rows[0];
  const role = quoteIdent(r.role);
  if (r.version < 110000) problems.push(`PostgreSQL ${Math.floor(r.version / 10000)} is too old for trigger capture (it needs 11 or later)`);
  if (r.schema_exists && !r.schema_create) problems.push(`role ${r.role} may not create objects in schema ${schema}: GRANT CREATE ON SCHEMA ${quoteIdent(schema)} TO ${role}`);
  if (!r.schema_exists && !r.db_create) {
    problems.push(
      `schema ${schema} does not exist and role ${r.role} may not create it: GRANT CREATE ON DATABASE ${quoteIdent(r.db)} TO ${role} ` +
        `(or have an administrator run CREATE SCHEMA ${quoteIdent(schema)} AUTHORIZATION ${role})`,
    );
  }
  for (const table of tables) {
    const { schema: tableSchema } = splitTableName(table, '"');
    const t = (
      await client.query(
        `SELECT has_schema_privilege($2, 'USAGE') AS usage,
                CASE WHEN to_regclass($1) IS NOT NULL THEN has_table_privilege($1, 'TRIGGER') END AS trig`,
        [quoteTable(table), tableSchema],
      )
    ).rows[0];
    if (!t.usage) problems.push(`role ${r.role} may not use schema ${tableSchema}: GRANT USAGE ON SCHEMA ${quoteIdent(tableSchema)} TO ${role}`);
    else if (t.trig === false) problems.push(`role ${r.role} may not create triggers on ${table}: GRANT TRIGGER ON ${quoteTable(table)} TO ${role}`);
  }
  return problems;
}

/** The SQL of one table's capture function. */
function functionSql(schema: string, source: string, t: CaptureTable): string {
  const changelog = `${quoteIdent(schema)}.changelog`;
  const keyText = (rec: 'OLD' | 'NEW') =>
    `ARRAY[${t.columns
      .map((c, i) => (t.types[i] === BOOL ? `CASE ${rec}.${quoteIdent(c)} WHEN true THEN 't' WHEN false THEN 'f' END` : `${rec}.${quoteIdent(c)}::text`))
      .join(', ')}]`;
  const keyRow = (rec: 'OLD' | 'NEW') => `ROW(${t.columns.map((c) => `${rec}.${quoteIdent(c)}`).join(', ')})`;
  const insert = (key: string, action: string) =>
    `INSERT INTO ${changelog} (source, tbl, key, action) VALUES (${quoteLiteral(source)}, ${quoteLiteral(t.table)}, ${key}, '${action}');`;
  return `CREATE OR REPLACE FUNCTION ${quoteIdent(schema)}.${quoteIdent(functionName(source, t.table))}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tributary$
BEGIN
  IF TG_LEVEL = 'STATEMENT' THEN
    IF TG_OP = 'TRUNCATE' THEN
      ${insert('NULL', 't')}
    END IF;
    IF NOT pg_try_advisory_xact_lock_shared(${sleepLock(schema, source)}) THEN
      PERFORM pg_notify(${quoteLiteral(channelName(schema, source))}, '');
    END IF;
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ${keyRow('OLD')} IS DISTINCT FROM ${keyRow('NEW')}) THEN
    ${insert(keyText('OLD'), 'd')}
  END IF;
  IF TG_OP <> 'DELETE' THEN
    ${insert(keyText('NEW'), 'u')}
  END IF;
  RETURN NULL;
END
$tributary$`;
}

/** The comment on a capture function: how a check recognises an up-to-date install. */
const functionComment = (source: string, t: CaptureTable) => `tributary capture: source ${source}, table ${t.table}, key ${t.columns.join(',')}`;

/**
 * Installs (idempotently) the schema, the changelog and each table's function and triggers.
 * Returns the tables whose triggers were created now (changes before them are unknown).
 */
export async function installTriggers(client: pg.Client, where: string, schema: string, source: string, tables: CaptureTable[]): Promise<string[]> {
  const problems = await installProblems(client, schema, tables.map((t) => t.table));
  if (problems.length) throw new SourceSetupError(`${where}: cannot install trigger capture: ${problems.join('; ')}.`);
  const created: string[] = [];
  const names = triggerNames(source);
  await client.query('BEGIN');
  try {
    // One installer at a time: concurrent CREATE ... IF NOT EXISTS can still collide.
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('tributary trigger install'))`);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${quoteIdent(schema)}.changelog (
      source text NOT NULL,
      seq bigint GENERATED ALWAYS AS IDENTITY,
      tbl text NOT NULL,
      key text[],
      action "char" NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp(),
      PRIMARY KEY (source, seq))`);
    for (const t of tables) {
      const fn = `${quoteIdent(schema)}.${quoteIdent(functionName(source, t.table))}`;
      await client.query(functionSql(schema, source, t));
      await client.query(`COMMENT ON FUNCTION ${fn}() IS ${quoteLiteral(functionComment(source, t))}`);
      if (t.partitioned) await installOnPartitions(client, t.table, names.stmt, fn);
      const existing = (
        await client.query(
          `SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = ANY($2) AND tgfoid = $3::regprocedure AND tgenabled <> 'D'`,
          [quoteTable(t.table), [names.row, names.stmt], `${fn}()`],
        )
      ).rows.map((r) => r.tgname as string);
      if (existing.length === 2) continue;
      for (const [name, events, level] of [
        [names.row, 'INSERT OR UPDATE OR DELETE', 'ROW'],
        [names.stmt, 'INSERT OR UPDATE OR DELETE OR TRUNCATE', 'STATEMENT'],
      ]) {
        await client.query(`DROP TRIGGER IF EXISTS ${quoteIdent(name)} ON ${quoteTable(t.table)}`);
        await client.query(`CREATE TRIGGER ${quoteIdent(name)} AFTER ${events} ON ${quoteTable(t.table)} FOR EACH ${level} EXECUTE FUNCTION ${fn}()`);
      }
      created.push(t.table);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  return created;
}

/**
 * A partitioned table's row trigger is cloned to every partition, its statement trigger is
 * not: a TRUNCATE of one partition, and the wake-up after a statement that writes a partition
 * directly, need the statement trigger on each partition. Partitions created later get it at
 * the next start (until then their rows are still captured, read by the fallback poll).
 */
async function installOnPartitions(client: pg.Client, table: string, name: string, fn: string): Promise<void> {
  const missing = (
    await client.query(
      `SELECT t.relid::regclass::text AS part FROM pg_partition_tree(to_regclass($1)) t
        WHERE t.level > 0 AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = t.relid AND g.tgname = $2 AND g.tgfoid = $3::regprocedure)`,
      [quoteTable(table), name, `${fn}()`],
    )
  ).rows as Array<{ part: string }>;
  for (const { part } of missing) {
    await client.query(`DROP TRIGGER IF EXISTS ${quoteIdent(name)} ON ${part}`);
    await client.query(`CREATE TRIGGER ${quoteIdent(name)} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${part} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`);
  }
}

/**
 * With installTriggers: false: checks every table has this source's triggers, with a function
 * recording the right key columns, and that this role may read and delete changelog rows.
 */
export async function checkTriggers(client: pg.Client, where: string, schema: string, source: string, tables: CaptureTable[], lensOf: (table: string) => string): Promise<void> {
  const names = triggerNames(source);
  for (const t of tables) {
    const fn = `${quoteIdent(schema)}.${quoteIdent(functionName(source, t.table))}`;
    const found = (
      await client.query(
        `SELECT count(*)::int AS n, min(obj_description(p.oid, 'pg_proc')) AS comment
           FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid
          WHERE g.tgrelid = to_regclass($1) AND g.tgname = ANY($2) AND g.tgenabled <> 'D'
            AND p.oid = to_regprocedure($3)`,
        [quoteTable(t.table), [names.row, names.stmt], `${fn}()`],
      )
    ).rows[0];
    if (found.n !== 2 || found.comment !== functionComment(source, t)) {
      throw new SourceSetupError(
        `${where}: the capture triggers of ${t.table} are ${found.n === 2 ? 'out of date (the lens key changed)' : 'not installed'} and installTriggers is false. ` +
          `Run tributary triggers install --lens ${lensOf(t.table)} (with a role that has TRIGGER on the table), or set installTriggers: true.`,
      );
    }
  }
  const priv = (
    await client.query(
      `SELECT current_user AS role, has_schema_privilege($1, 'USAGE') AS usage,
              has_table_privilege($2, 'SELECT') AND has_table_privilege($2, 'DELETE') AS rw`,
      [schema, `${quoteIdent(schema)}.changelog`],
    )
  ).rows[0];
  if (!priv.usage || !priv.rw) {
    throw new SourceSetupError(
      `${where}: role ${priv.role} may not read and delete ${schema}.changelog. Run GRANT USAGE ON SCHEMA ${quoteIdent(schema)} TO ${quoteIdent(priv.role)}; ` +
        `GRANT SELECT, DELETE ON ${quoteIdent(schema)}.changelog TO ${quoteIdent(priv.role)}.`,
    );
  }
}

/**
 * Removes this source's triggers and function from `table` and its changelog rows for it; then
 * the source's remaining rows when it has no table left, and the changelog and schema when no
 * source has. Returns what it removed, for the CLI.
 */
export async function uninstallTriggers(client: pg.Client, schema: string, source: string, table: string): Promise<string[]> {
  const done: string[] = [];
  const names = triggerNames(source);
  const s = quoteIdent(schema);
  const fn = functionName(source, table);
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('tributary trigger install'))`);
    if ((await client.query('SELECT to_regclass($1) AS t', [quoteTable(table)])).rows[0].t) {
      for (const name of [names.row, names.stmt]) {
        const r = await client.query(`SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2`, [quoteTable(table), name]);
        if (r.rowCount) {
          await client.query(`DROP TRIGGER ${quoteIdent(name)} ON ${quoteTable(table)}`);
          done.push(`trigger ${name} on ${table}`);
        }
      }
    }
    if ((await client.query('SELECT to_regprocedure($1) AS f', [`${s}.${quoteIdent(fn)}()`])).rows[0].f) {
      // CASCADE: the statement triggers on a partitioned table's partitions (installOnPartitions).
      await client.query(`DROP FUNCTION ${s}.${quoteIdent(fn)}() CASCADE`);
      done.push(`function ${schema}.${fn}`);
    }
    if ((await client.query('SELECT to_regclass($1) AS t', [`${s}.changelog`])).rows[0].t) {
      // Capture functions left in the schema, by the source they belong to (from their comments).
      const left = (
        await client.query(
          `SELECT obj_description(p.oid, 'pg_proc') AS comment FROM pg_proc p
            WHERE p.pronamespace = to_regnamespace($1) AND p.proname LIKE 'capture\\_%'`,
          [schema],
        )
      ).rows.map((r) => String(r.comment ?? ''));
      const sourceLeft = left.some((c) => c.startsWith(`tributary capture: source ${source}, table `));
      const removed = sourceLeft
        ? await client.query(`DELETE FROM ${s}.changelog WHERE source = $1 AND tbl = $2`, [source, table])
        : await client.query(`DELETE FROM ${s}.changelog WHERE source = $1`, [source]);
      if (removed.rowCount) done.push(`${removed.rowCount} undelivered changelog row(s)`);
      if (left.length === 0) {
        await client.query(`DROP TABLE ${s}.changelog`);
        done.push(`table ${schema}.changelog`);
        const empty = (
          await client.query(
            `SELECT NOT EXISTS (SELECT 1 FROM pg_depend WHERE refobjid = n.oid) AND pg_has_role(n.nspowner, 'MEMBER') AS empty
               FROM pg_namespace n WHERE n.oid = to_regnamespace($1)`,
            [schema],
          )
        ).rows[0].empty;
        if (empty) {
          await client.query(`DROP SCHEMA ${s}`);
          done.push(`schema ${schema}`);
        }
      }
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  return done;
}
