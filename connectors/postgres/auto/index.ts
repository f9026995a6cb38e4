/**
 * `capture: auto` for Postgres: probes the server and the role, picks the best capture mode
 * that will work, and hands over to that mode's connector from the registry.
 *
 * - logical: wal_level=logical, the role may replicate (superuser, REPLICATION, or RDS's
 *   rds_replication), and the publication exists or the role may create it (CREATE on the
 *   database and ownership of the lens tables);
 * - else trigger: the role may install the triggers (CREATE on the schema or database, TRIGGER
 *   on the tables), or with installTriggers: false they are installed already;
 * - else poll: every lens has a changeTrackingColumn.
 * The choice and its reason are logged and reported through `ctx.report.capture` for status;
 * the source spec (../spec.ts) then creates the chosen mode's connector, so the pipeline holds
 * that connector whole (its saved position and every capability).
 */
import pg from 'pg';
import type { PostgresSourceConfig } from '../spec.js';
import { SourceSetupError, describeError } from '../../../src/errors.js';
import { retry } from '../../../src/retry.js';
import type { ConnectorContext } from '../../../src/types.js';
import { classifyPgError, pgConnection, quoteTable } from '../../../src/postgres.js';
import { replicationRole } from '../logical/setup.js';
import { checkTriggers, installProblems, resolveTables } from '../trigger/setup.js';

export type CaptureMode = 'logical' | 'trigger' | 'poll';

export interface CaptureChoice {
  mode: CaptureMode;
  reason: string;
}

/** Decides the capture mode for `config` (see the file comment). Throws when none can work. */
export async function chooseCapture(client: pg.Client, config: PostgresSourceConfig, ctx: ConnectorContext): Promise<CaptureChoice> {
  const where = `source "${ctx.sourceName}"`;
  const tables = await resolveTables(client, where, ctx.lenses);
  const tableNames = tables.map((t) => t.table);

  const notLogical = await logicalProblem(client, config, tableNames);
  if (!notLogical) return { mode: 'logical', reason: 'wal_level is logical and the role may replicate' };

  let notTrigger: string | undefined;
  if (config.installTriggers) {
    const problems = await installProblems(client, config.triggerSchema, tableNames);
    if (problems.length === 0) return { mode: 'trigger', reason: `${notLogical}; the role may install triggers` };
    notTrigger = problems.join('; ');
  } else {
    try {
      await checkTriggers(client, where, config.triggerSchema, ctx.sourceName, tables, (t) => ctx.lenses.find((l) => l.table === t)!.name);
      return { mode: 'trigger', reason: `${notLogical}; the capture triggers are installed` };
    } catch (err) {
      if (!(err instanceof SourceSetupError)) throw err;
      notTrigger = err.message.slice(where.length + 2);
    }
  }

  const untracked = ctx.lenses.filter((l) => !l.config.changeTrackingColumn).map((l) => l.name);
  if (untracked.length === 0) return { mode: 'poll', reason: `${notLogical}; no triggers: ${notTrigger}` };
  throw new SourceSetupError(
    `${where}: capture: auto found no mode that works. logical: ${notLogical}. trigger: ${notTrigger}. ` +
      `poll: lens(es) ${untracked.join(', ')} have no changeTrackingColumn; set changeTrackingColumn: <a column updated on every write> on them, ` +
      'or fix one of the above.',
  );
}

/** Why logical replication will not work here, or undefined when it will. */
async function logicalProblem(client: pg.Client, config: PostgresSourceConfig, tables: string[]): Promise<string | undefined> {
  const walLevel = (await client.query('SHOW wal_level')).rows[0].wal_level as string;
  if (walLevel !== 'logical') return `wal_level is ${walLevel}, not logical`;
  const role = await replicationRole(client);
  if (!role.may_replicate) return `role ${role.name} has no REPLICATION attribute`;
  const r = (
    await client.query(
      `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS published,
              has_database_privilege(current_database(), 'CREATE') AS db_create,
              ARRAY(SELECT t FROM unnest($2::text[]) t JOIN pg_class c ON c.oid = to_regclass(t)
                     WHERE NOT pg_has_role(c.relowner, 'USAGE')) AS not_owned`,
      [config.publication, tables.map(quoteTable)],
    )
  ).rows[0];
  if (!r.published && (!r.db_create || r.not_owned.length)) {
    return `publication ${config.publication} does not exist and role ${role.name} may not create it (it needs CREATE on the database and to own the lens tables)`;
  }
  return undefined;
}

/**
 * Probes the source until it answers (reporting `reconnecting` meanwhile), decides, logs the
 * choice and reports it for status. The caller creates the chosen mode's connector.
 */
export async function chooseCaptureWhenReachable(config: PostgresSourceConfig, ctx: ConnectorContext): Promise<CaptureChoice> {
  const where = `source "${ctx.sourceName}"`;
  ctx.report.state('connecting');
  const choice = await retry(
    async () => {
      const client = new pg.Client(pgConnection(config.url, { application_name: `tributary:${ctx.sourceName}` }));
      client.on('error', () => {});
      try {
        await client.connect();
        return await chooseCapture(client, config, ctx);
      } catch (err) {
        throw classifyPgError(err, where);
      } finally {
        await client.end().catch(() => {});
      }
    },
    {
      initialMs: 500,
      maxMs: 10_000,
      signal: ctx.signal,
      onRetry: (err, attempt) => {
        ctx.report.state('reconnecting', describeError(err));
        ctx.log.warn({ err: describeError(err), attempt }, 'cannot reach the source yet; retrying');
      },
    },
  );
  ctx.log.info({ capture: choice.mode, reason: choice.reason }, `capture: auto chose ${choice.mode}`);
  ctx.report.capture(choice.mode, choice.reason);
  return choice;
}
