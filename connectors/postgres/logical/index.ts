/**
 * Postgres logical replication (pgoutput) connector.
 *
 * Position: the LSN Postgres should keep as the slot's confirmed_flush_lsn: a transaction's
 * commit end LSN, or the server's WAL end on an idle keepalive. A transaction whose commit
 * record starts at or after the confirmed position is sent again after a restart.
 */
import pg from 'pg';
import { LogicalReplicationService } from 'pg-logical-replication';
import type { PostgresSourceConfig } from '../spec.js';
import { SourceUnavailableError, describeError } from '../../../src/errors.js';
import { classifyPgError, pgConnection } from '../../../src/postgres.js';
import { supervise, type Session, type Supervisor } from '../../../src/supervisor.js';
import type { ConnectorContext, SourceConnector, SourceHandler } from '../../../src/types.js';
import { formatLsn, parseLsn } from './lsn.js';
import { LeanPgoutputPlugin } from './pgoutput.js';
import { relationRouter } from './routes.js';
import { setUpSource } from './setup.js';

export function createPostgresLogicalConnector(config: PostgresSourceConfig, ctx: ConnectorContext): SourceConnector {
  const where = `source "${ctx.sourceName}"`;
  const log = ctx.log;
  let handler: SourceHandler;
  let service: LogicalReplicationService | undefined;
  let supervisor: Supervisor | undefined;
  let paused = false;
  /** Lenses whose key column is gone (reported as owing a full sync once). */
  const keyless = new Set<string>();
  /** The highest position acknowledged to us (what the slot may confirm). */
  let acked = 0n;
  let inTransaction = false;
  let commitTime = 0;
  let statusTimer: NodeJS.Timeout | undefined;
  let lagPool: pg.Pool | undefined;
  /** Answers the decoder's questions about relations it does not know (partitions, children). */
  let routePool: pg.Pool | undefined;
  let plugin: LeanPgoutputPlugin | undefined;
  /** Ends the current stream with an error (a failed route lookup). */
  let failStream: ((err: unknown) => void) | undefined;

  /** Sends a standby status update confirming `acked` (the library adds 1 to what it is given). */
  function sendStatus(): void {
    if (service && acked > 0n) void service.acknowledge(formatLsn(acked - 1n));
  }

  function socket(): { pause(): void; resume(): void } | undefined {
    return (service as unknown as { _connection?: { stream?: { pause(): void; resume(): void } } })?._connection?.stream;
  }

  function decodeHandler() {
    return {
      begin(time: number) {
        inTransaction = true;
        commitTime = time;
      },
      commit(endLsn: string) {
        inTransaction = false;
        handler.checkpoint(endLsn);
      },
      row(lens: string, action: 'upsert' | 'delete', id: string, oldId?: string) {
        if (oldId !== undefined) handler.change({ lens, id: oldId, action: 'delete', committedAt: commitTime });
        handler.change({ lens, id, action, committedAt: commitTime });
      },
      truncate(lens: string) {
        handler.resync(lens, `TRUNCATE of its table (transaction committed ${new Date(commitTime).toISOString()})`);
      },
      unreadableKey(lens: string, table: string) {
        log.error({ lens, table }, 'a change arrived without a readable key (unchanged TOASTed key column); resyncing the lens');
        handler.resync(lens, `a change in ${table} arrived without a readable key`);
      },
      keyGone(lens: string, table: string, column: string) {
        if (keyless.has(lens)) return;
        keyless.add(lens);
        const reason =
          `column "${column}" (the key of lens ${lens}) is gone from ${table} (renamed or dropped): set primaryKey on the lens ` +
          `to the new key column(s), restart, then run tributary ingest ${lens} --mode full`;
        log.error({ lens, table, column }, reason);
        handler.fullSyncOwed(lens, reason);
      },
      skippedUnkeyed(lens: string) {
        log.warn({ lens }, 'skipping the changes of this lens: its key column is gone (counted, not logged per row)');
      },
      unmatched(table: string) {
        handler.unmatched(
          table,
          `it is published by publication "${config.publication}" but is neither a lens table nor a partition or child of one: ` +
            `if its rows belong to a lens, point the lens's table at it (or at its partitioned root); otherwise remove it from the publication`,
        );
      },
      waiting(on: boolean) {
        if (on) socket()?.pause();
        else if (!paused) socket()?.resume();
      },
      failed(err: unknown) {
        failStream?.(err);
      },
    };
  }

  async function withClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client(pgConnection(config.url, { application_name: `tributary:${ctx.sourceName}` }));
    client.on('error', () => {}); // surfaced through the failing query
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** One replication connection, from connect to its end (a supervisor session). */
  async function streamOnce(plugin: LeanPgoutputPlugin, session: Session): Promise<void> {
    plugin.reset();
    const readConfirmed = () =>
      withClient(async (client) => {
        const row = (await client.query('SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1', [config.slot])).rows[0];
        return row?.confirmed_flush_lsn as string | null | undefined;
      });
    let confirmed = await readConfirmed();
    if (confirmed === undefined) {
      // Someone dropped the slot: what happened since the last acknowledgement is gone from WAL.
      await withClient((client) => setUpSource(client, ctx.sourceName, config, ctx.lenses));
      confirmed = await readConfirmed();
      acked = confirmed ? parseLsn(confirmed) : 0n;
      log.warn({ slot: config.slot }, 'replication slot was missing and has been created again; resyncing every lens');
      for (const lens of ctx.lenses) handler.resync(lens.name, `replication slot "${config.slot}" was dropped and created again`);
    }
    if (confirmed && parseLsn(confirmed) > acked) acked = parseLsn(confirmed);
    const svc = new LogicalReplicationService(
      pgConnection(config.url, { application_name: `tributary:${ctx.sourceName}` }),
      { acknowledge: { auto: false, timeoutSeconds: 0 } },
    );
    let failure: unknown;
    svc.on('error', (err) => (failure ??= err));
    svc.on('heartbeat', (lsn: string, _time: number, shouldRespond: boolean) => {
      log.debug({ lsn, inTransaction }, 'keepalive');
      // Held messages (a route lookup) come before this WAL end: it may not be confirmed yet.
      if (!inTransaction && !plugin.busy) handler.checkpoint(formatLsn(parseLsn(lsn)));
      if (shouldRespond) sendStatus();
    });
    svc.on('start', () => {
      service = svc;
      if (paused) socket()?.pause();
      sendStatus();
      session.streaming();
    });
    const end = () => void svc.stop().catch((err) => log.warn({ err: describeError(err) }, 'error closing replication'));
    session.signal.addEventListener('abort', end);
    failStream = (err) => {
      failure ??= err;
      end();
    };
    inTransaction = false;
    try {
      // 0/0: start at the slot's confirmed position, never at something merely received.
      await svc.subscribe(plugin, config.slot, '0/0');
      if (!session.signal.aborted) throw failure ?? new SourceUnavailableError(`${where}: the server ended the replication stream`);
    } finally {
      failStream = undefined;
      session.signal.removeEventListener('abort', end);
      service = undefined;
      await svc.stop().catch(() => {});
    }
  }

  return {
    async start(h) {
      handler = h;
      let fresh = false;
      routePool = new pg.Pool({ connectionString: config.url, max: 1, application_name: `tributary:${ctx.sourceName}:routes` });
      routePool.on('error', () => {});
      supervisor = supervise({
        state: (state, detail) => handler.state(state, detail),
        log,
        classify: (err) => classifyPgError(err, where),
        // Setup (first session only) and streaming are retried alike; a setup problem rejects `started`.
        session: async (session) => {
          if (!plugin) {
            const setup = await withClient((client) => setUpSource(client, ctx.sourceName, config, ctx.lenses));
            log.info({ slot: config.slot, publication: config.publication, slotCreated: setup.slotCreated }, 'source ready');
            for (const warning of setup.warnings) log.warn({ publication: config.publication }, warning);
            fresh = setup.slotCreated;
            const router = relationRouter(routePool!, new Set(setup.lensesByTable.keys()));
            plugin = new LeanPgoutputPlugin([config.publication], setup.lensesByTable, decodeHandler(), router);
          }
          await streamOnce(plugin, session);
        },
      });
      statusTimer = setInterval(sendStatus, config.statusIntervalMs);
      statusTimer.unref();
      try {
        await supervisor.started;
      } catch (err) {
        clearInterval(statusTimer);
        await routePool.end().catch(() => {});
        throw err;
      }
      return { fresh };
    },

    get stopped() {
      return supervisor?.stopped;
    },

    acknowledge(position) {
      const lsn = parseLsn(position);
      if (lsn <= acked) return;
      acked = lsn;
      log.debug({ position }, 'acknowledged');
      sendStatus();
    },

    pause() {
      paused = true;
      socket()?.pause();
    },

    resume() {
      paused = false;
      if (!plugin?.busy) socket()?.resume();
    },

    async lag() {
      if (!lagPool) {
        lagPool = new pg.Pool(pgConnection(config.url, { max: 1, application_name: `tributary:${ctx.sourceName}:lag` }));
        lagPool.on('error', () => {});
      }
      const row = (
        await lagPool.query(
          `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 AS lag,
                  pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 AS retained
             FROM pg_replication_slots WHERE slot_name = $1`,
          [config.slot],
        )
      ).rows[0];
      return row ? { lagBytes: row.lag, retainedBytes: row.retained } : {};
    },

    async stop() {
      if (statusTimer) clearInterval(statusTimer);
      sendStatus();
      // A paused socket never reports the server's end of the connection: let it flow to close.
      socket()?.resume();
      await supervisor?.stop();
      await lagPool?.end().catch(() => {});
      await routePool?.end().catch(() => {});
    },
  };
}
