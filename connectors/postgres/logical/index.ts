/**
 * Postgres logical replication (pgoutput) connector.
 *
 * Position: the LSN Postgres should keep as the slot's confirmed_flush_lsn: a transaction's
 * commit end LSN, or the server's WAL end on an idle keepalive. A transaction whose commit
 * record starts at or after the confirmed position is sent again after a restart.
 */
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { LogicalReplicationService } from 'pg-logical-replication';
import type { PostgresSourceConfig } from '../spec.js';
import { describeError } from '../../../src/errors.js';
import { backoffDelay } from '../../../src/retry.js';
import type { ConnectorContext, SourceConnector, SourceHandler } from '../../../src/types.js';
import { classifyPgError } from '../../../src/postgres.js';
import { formatLsn, parseLsn } from './lsn.js';
import { LeanPgoutputPlugin } from './pgoutput.js';
import { setUpSource } from './setup.js';

export function createPostgresLogicalConnector(config: PostgresSourceConfig, ctx: ConnectorContext): SourceConnector {
  const where = `source "${ctx.sourceName}"`;
  const log = ctx.log;
  let handler: SourceHandler;
  let service: LogicalReplicationService | undefined;
  let stopping = false;
  let paused = false;
  /** The highest position acknowledged to us (what the slot may confirm). */
  let acked = 0n;
  let inTransaction = false;
  let commitTime = 0;
  let statusTimer: NodeJS.Timeout | undefined;
  let loop: Promise<void> | undefined;
  let lagPool: pg.Pool | undefined;

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
    };
  }

  async function withClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: config.url, application_name: `tributary:${ctx.sourceName}` });
    client.on('error', () => {}); // surfaced through the failing query
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** One replication connection, from connect to its end. Resolves `onStart` once streaming. */
  async function streamOnce(plugin: LeanPgoutputPlugin, onStart: () => void): Promise<void> {
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
      { connectionString: config.url, application_name: `tributary:${ctx.sourceName}` },
      { acknowledge: { auto: false, timeoutSeconds: 0 } },
    );
    let failure: unknown;
    svc.on('error', (err) => (failure ??= err));
    svc.on('heartbeat', (lsn: string, _time: number, shouldRespond: boolean) => {
      log.debug({ lsn, inTransaction }, 'keepalive');
      if (!inTransaction) handler.checkpoint(formatLsn(parseLsn(lsn)));
      if (shouldRespond) sendStatus();
    });
    svc.on('start', () => {
      service = svc;
      if (paused) socket()?.pause();
      sendStatus();
      handler.state('streaming');
      onStart();
    });
    inTransaction = false;
    try {
      // 0/0: start at the slot's confirmed position, never at something merely received.
      await svc.subscribe(plugin, config.slot, '0/0');
      if (!stopping) throw failure ?? new Error('the server ended the replication stream');
    } finally {
      service = undefined;
      await svc.stop().catch(() => {});
    }
  }

  return {
    async start(h) {
      handler = h;
      handler.state('connecting');
      let setup;
      for (let attempt = 0; ; attempt++) {
        try {
          setup = await withClient((client) => setUpSource(client, ctx.sourceName, config, ctx.lenses));
          break;
        } catch (err) {
          const error = classifyPgError(err, where);
          if (!error.retriable || stopping) throw error;
          handler.state('reconnecting', error.message);
          log.warn({ err: error.message, attempt }, 'cannot reach the source yet; retrying');
          await sleep(backoffDelay(attempt, 500, 10_000));
        }
      }
      const { lensesByTable, slotCreated } = setup;
      log.info({ slot: config.slot, publication: config.publication, slotCreated }, 'source ready');
      const plugin = new LeanPgoutputPlugin([config.publication], lensesByTable, decodeHandler());
      statusTimer = setInterval(sendStatus, config.statusIntervalMs);
      statusTimer.unref();

      await new Promise<void>((resolve, reject) => {
        let started = false;
        loop = (async () => {
          for (let attempt = 0; !stopping; ) {
            try {
              await streamOnce(plugin, () => {
                started = true;
                attempt = 0;
                resolve();
              });
            } catch (err) {
              if (stopping) break;
              const error = classifyPgError(err, where);
              if (!error.retriable) {
                handler.state('error', error.message);
                log.error({ err: error.message }, 'replication stopped');
                if (!started) reject(error);
                return;
              }
              const standby = 'standby' in error && error.standby;
              handler.state(standby ? 'standby' : 'reconnecting', error.message);
              log.warn({ err: error.message, attempt }, standby ? 'slot is in use elsewhere; standing by' : 'replication interrupted; reconnecting');
              await sleep(standby ? 2000 : backoffDelay(attempt++, 500, 10_000));
            }
          }
        })();
      });
      return { fresh: slotCreated };
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
      socket()?.resume();
    },

    async lag() {
      if (!lagPool) {
        lagPool = new pg.Pool({ connectionString: config.url, max: 1, application_name: `tributary:${ctx.sourceName}:lag` });
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
      stopping = true;
      if (statusTimer) clearInterval(statusTimer);
      sendStatus();
      // A paused socket never reports the server's end of the connection: let it flow to close.
      socket()?.resume();
      await service?.stop().catch((err) => log.warn({ err: describeError(err) }, 'error closing replication'));
      await loop;
      await lagPool?.end().catch(() => {});
    },
  };
}
