/**
 * Postgres trigger capture: row triggers on the lens tables write each change to a changelog
 * table (./setup.ts) in the writing transaction; this connector reads the changelog in
 * sequence order, reports the changes, and deletes exactly the rows it read once the pipeline
 * acknowledges them. A restart reads whatever was not deleted again (at-least-once).
 *
 * Late committers. `seq` is taken when a row is written, not at commit, so a transaction can
 * commit seq 5 after seq 6 was read. Rows are therefore never deleted by range: each read takes,
 * in seq order, every row of the source that is not already read (in flight to the sink or
 * acknowledged and being deleted), so a late committer is read as soon as it is visible. For
 * one id, row locks (and the key's unique index) make a later change wait for the earlier
 * one's commit, so a read that sees the later change sees the earlier one too, and reads it
 * first: the last action wins.
 *
 * Bounded work: the seqs a read skips (read, not yet deleted) travel with every read, so the
 * reader holds at most MAX_UNACKED of them: with that many read and not yet acknowledged, it
 * waits for acknowledgements before reading on. Acknowledged seqs are deleted before the next
 * read, so the parameter never exceeds MAX_UNACKED, and a late committer below every read seq
 * is still read on the next read: nothing is excluded by range.
 *
 * Position: `<read number>:<highest seq read so far>`. Each read is one checkpoint;
 * acknowledging it deletes the seqs of that read and of every earlier one.
 */
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PostgresSourceConfig } from '../spec.js';
import { SourceSetupError, SourceUnavailableError, TributaryError, describeError } from '../../../src/errors.js';
import { encodeId } from '../../../src/ids.js';
import { SQLSTATE } from '../../../src/postgres.js';
import { supervise, type Supervisor } from '../../../src/supervisor.js';
import type { ConnectorContext, Position, SourceConnector, SourceHandler } from '../../../src/types.js';
import { classifyPgError, pgConnection, quoteIdent } from '../../../src/postgres.js';
import { channelName, checkTriggers, installTriggers, resolveTables, sleepLock, type CaptureTable } from './setup.js';

/** Changelog rows per read: bounds memory on a backlog. */
export const READ_LIMIT = 5000;
/** Seqs read and not yet acknowledged at most: bounds what each read sends (see the file comment). */
export const MAX_UNACKED = 4 * READ_LIMIT;
/** Read even without a notification this often (a NOTIFY is lost if the connection drops). */
const FALLBACK_POLL_MS = 2000;
/** While writers are in progress the reader cannot sleep on NOTIFY: it polls, backing off between these. */
const MIN_POLL_MS = 10;
const MAX_POLL_MS = 500;

export function createPostgresTriggerConnector(config: PostgresSourceConfig, ctx: ConnectorContext): SourceConnector {
  const where = `source "${ctx.sourceName}"`;
  const log = ctx.log;
  const changelog = `${quoteIdent(config.triggerSchema)}.changelog`;
  let handler: SourceHandler;
  let tables = new Map<string, CaptureTable>();
  let client: pg.Client | undefined;
  let supervisor: Supervisor | undefined;
  let paused = false;
  let wakeUp: (() => void) | undefined;
  /** The connection failed (the next query on it throws "not queryable"): reconnect. */
  let broken = false;
  /** The reader holds the sleep lock (setup.ts `sleepLock`): writers notify. */
  let holding = false;
  const lockKey = sleepLock(config.triggerSchema, ctx.sourceName);

  let highWater = 0;
  /** Seqs read and not yet deleted: the next reads skip them. */
  const readSeqs = new Set<number>();
  let reads = 0;
  /** Reads reported but not yet acknowledged, oldest first. */
  const unacked: Array<{ position: Position; seqs: number[] }> = [];
  /** Acknowledged seqs not yet deleted. */
  let toDelete: number[] = [];

  /** Set by a wake-up that came while the loop was busy, so that its next idle() returns at once. */
  let woken = false;
  const wake = () => {
    woken = true;
    wakeUp?.();
  };

  /** A failure as a TributaryError; on a connection that reported an error or its end, a retriable one. */
  function classify(err: unknown): TributaryError {
    if (err instanceof TributaryError) return err;
    const error = classifyPgError(err, where);
    return broken && !error.retriable ? new SourceUnavailableError(error.message, { cause: err }) : error;
  }

  async function connect(): Promise<pg.Client> {
    const c = new pg.Client(pgConnection(config.url, { application_name: `tributary:${ctx.sourceName}` }));
    c.on('error', () => (broken = true)); // surfaced by the next query
    c.on('end', () => (broken = true));
    c.on('notification', wake);
    try {
      broken = false;
      holding = false;
      await c.connect();
      await c.query(`LISTEN ${quoteIdent(channelName(config.triggerSchema, ctx.sourceName))}`);
      return c;
    } catch (err) {
      await c.end().catch(() => {});
      throw err;
    }
  }

  /** Sets up the changelog and triggers (or checks them). Returns true when triggers were created now. */
  async function setUp(c: pg.Client): Promise<boolean> {
    try {
      return await setUpOrThrow(c);
    } catch (err) {
      if ((err as { code?: string }).code !== SQLSTATE.insufficientPrivilege) throw err;
      throw new SourceSetupError(
        `${where}: permission denied setting up trigger capture (${describeError(err)}). The role needs CREATE on schema ` +
          `${config.triggerSchema} (or on the database), TRIGGER on the lens tables, and to own what is in ${config.triggerSchema} ` +
          '(an install by another role must be run by that role: tributary triggers install).',
        { cause: err },
      );
    }
  }

  async function setUpOrThrow(c: pg.Client): Promise<boolean> {
    const resolved = await resolveTables(c, where, ctx.lenses);
    tables = new Map(resolved.map((t) => [t.table, t]));
    const partitioned = resolved.filter((t) => t.partitioned).map((t) => t.table);
    if (partitioned.length) {
      log.warn(
        { tables: partitioned },
        'DROP or DETACH PARTITION, and a TRUNCATE of a partition created after this start (until the next one), remove rows ' +
          'without firing the capture triggers: set smartSyncInterval on these lenses, or run tributary ingest LENS --mode full after one',
      );
    }
    if (!config.installTriggers) {
      const lensOf = (table: string) => ctx.lenses.find((l) => l.table === table)!.name;
      await checkTriggers(c, where, config.triggerSchema, ctx.sourceName, resolved, lensOf);
      return false;
    }
    const created = await installTriggers(c, where, config.triggerSchema, ctx.sourceName, resolved);
    if (created.length) log.info({ tables: created, schema: config.triggerSchema }, 'capture triggers installed');
    return created.length > 0;
  }

  /** Reads one batch of the changelog and reports it. Returns the number of rows read. */
  async function readOnce(c: pg.Client): Promise<number> {
    const limit = Math.min(READ_LIMIT, MAX_UNACKED - readSeqs.size);
    if (limit <= 0) return 0; // waiting for acknowledgements
    const { rows } = await c.query<{ seq: number; tbl: string; key: string[] | null; action: string; at: number }>(
      `SELECT seq::float8 AS seq, tbl, key, action, extract(epoch FROM at)::float8 * 1000 AS at
         FROM ${changelog} WHERE source = $1 AND NOT (seq = ANY($2::int8[])) ORDER BY seq LIMIT ${limit}`,
      [ctx.sourceName, [...readSeqs]],
    );
    if (rows.length === 0) return 0;
    highWater = Math.max(highWater, rows[rows.length - 1].seq);
    for (const row of rows) readSeqs.add(row.seq);

    for (const row of rows) report(row);
    const position = `${++reads}:${highWater}`;
    unacked.push({ position, seqs: rows.map((r) => r.seq) });
    handler.checkpoint(position);
    return rows.length;
  }

  function report(row: { tbl: string; key: string[] | null; action: string; at: number }): void {
    const table = tables.get(row.tbl);
    if (!table) {
      // Triggers of this source on a table no lens reads (any more): its rows are deleted with the rest.
      handler.unmatched(
        row.tbl,
        `capture triggers of source "${ctx.sourceName}" are installed on it but no lens reads it: add the lens back, ` +
          `or drop its triggers tributary_${ctx.sourceName}_row and tributary_${ctx.sourceName}_stmt`,
      );
      return;
    }
    for (const lens of table.lenses) {
      if (row.action === 't') {
        handler.resync(lens.lens, `TRUNCATE of ${row.tbl} (at ${new Date(row.at).toISOString()})`);
        continue;
      }
      const values = lens.positions.map((i) => row.key?.[i]);
      if (values.some((v) => v === null || v === undefined)) {
        log.error({ lens: lens.lens, table: row.tbl }, 'a change arrived with a NULL key column; resyncing the lens');
        handler.resync(lens.lens, `a change in ${row.tbl} had a NULL key column`);
        continue;
      }
      const id = encodeId(values as string[], lens.positions.map((i) => table.types[i]));
      handler.change({ lens: lens.lens, id, action: row.action === 'd' ? 'delete' : 'upsert', committedAt: row.at });
    }
  }

  async function deleteAcknowledged(c: pg.Client): Promise<void> {
    if (toDelete.length === 0) return;
    const seqs = toDelete;
    toDelete = [];
    try {
      await c.query(`DELETE FROM ${changelog} WHERE source = $1 AND seq = ANY($2::int8[])`, [ctx.sourceName, seqs]);
      for (const seq of seqs) readSeqs.delete(seq);
    } catch (err) {
      toDelete = seqs.concat(toDelete); // tried again after the reconnect
      throw err;
    }
  }

  /** Waits for a notification, an acknowledgement, resume or stop, or `ms`. */
  async function idle(ms: number): Promise<void> {
    if (woken) {
      woken = false;
      return;
    }
    const ac = new AbortController();
    wakeUp = () => ac.abort();
    await sleep(ms, undefined, { signal: ac.signal }).catch(() => {});
    wakeUp = undefined;
    woken = false;
  }

  /** Reads until `signal` aborts or the connection fails (a supervisor session's loop). */
  async function readLoop(c: pg.Client, signal: AbortSignal): Promise<void> {
    let pollMs = MIN_POLL_MS;
    while (!signal.aborted) {
      await deleteAcknowledged(c);
      if (paused || readSeqs.size >= MAX_UNACKED) {
        await idle(FALLBACK_POLL_MS);
        continue;
      }
      const n = await readOnce(c);
      if (n > 0) pollMs = MIN_POLL_MS;
      if (holding) {
        // Awake (rows, or a notification, an ack, resume): writers need not notify while we read.
        if (n === 0) await idle(FALLBACK_POLL_MS);
        await c.query('SELECT pg_advisory_unlock($1)', [lockKey]);
        holding = false;
      } else if (n < READ_LIMIT) {
        // Caught up. With the lock, read once more (every writer that did not notify has
        // committed by now), then sleep; without it, writers are in progress: poll.
        holding = (await c.query('SELECT pg_try_advisory_lock($1) AS ok', [lockKey])).rows[0].ok;
        if (!holding) {
          await idle(pollMs);
          pollMs = Math.min(pollMs * 2, MAX_POLL_MS);
        }
      }
    }
  }

  return {
    async start(h) {
      handler = h;
      let fresh: boolean | undefined;
      supervisor = supervise({
        state: (state, detail) => handler.state(state, detail),
        log,
        classify,
        // Setup (first session only) and reading are retried alike; a setup problem rejects `started`.
        session: async ({ signal, streaming }) => {
          const c = await connect();
          signal.addEventListener('abort', wake);
          try {
            if (fresh === undefined) {
              fresh = await setUp(c);
              log.info({ schema: config.triggerSchema, tables: [...tables.keys()], fresh }, 'trigger capture ready');
            }
            client = c;
            streaming();
            await readLoop(c, signal);
          } catch (err) {
            const error = classify(err); // before our own end() marks the connection broken
            client = undefined;
            await c.end().catch(() => {});
            throw error;
          } finally {
            signal.removeEventListener('abort', wake);
          }
        },
      });
      await supervisor.started;
      return { fresh: fresh ?? false };
    },

    get stopped() {
      return supervisor?.stopped;
    },

    acknowledge(position) {
      const n = unacked.findIndex((r) => r.position === position);
      if (n < 0) return;
      for (const read of unacked.splice(0, n + 1)) for (const seq of read.seqs) toDelete.push(seq);
      wake();
    },

    pause() {
      paused = true;
    },

    resume() {
      paused = false;
      wake();
    },

    async stop() {
      await supervisor?.stop();
      if (client) await deleteAcknowledged(client).catch((err) => log.warn({ err: describeError(err) }, 'cannot delete acknowledged changelog rows; they replay on the next start'));
      await client?.end().catch(() => {});
      client = undefined;
    },
  };
}
