/**
 * MySQL/MariaDB binlog connector: tails the row-based binary log as a replica (zongji) and
 * turns row events of the lens tables into upserts and deletes.
 *
 * Position (./position.ts): the binlog place after a whole transaction (an Xid event), with
 * the GTID state there when resuming by GTID. The server keeps no replica state, so the
 * pipeline hands the last acknowledged position back to `start`. A first start reads the
 * server's current position before it returns, so the full syncs the pipeline then queues
 * and the stream overlap instead of leaving a gap.
 */
import ZongJi from '@vlasky/zongji';
import mysql from 'mysql2/promise';
import type { MysqlSourceConfig } from '../spec.js';
import { SourceUnavailableError } from '../../../src/errors.js';
import { encodeMysqlId, mysqlKeyText } from '../ids.js';
import { MYSQL_VALUE_OPTIONS } from '../reader.js';
import { formatTableName, splitTableName } from '../../../src/table-name.js';
import { mysqlConnection } from '../connection.js';
import { supervise, type Session, type Supervisor } from '../../../src/supervisor.js';
import type { ConnectorContext, SourceConnector, SourceHandler } from '../../../src/types.js';
import { PurgedPositionError, classifyMysqlError } from '../errors.js';
import { comparePositions, describePosition, formatPosition, parsePosition, type BinlogPosition } from './position.js';
import { binlogFiles, checkSource, position, type LensKey, type SourceInfo } from './setup.js';

const EVENTS = ['rotate', 'tablemap', 'writerows', 'updaterows', 'deleterows', 'xid', 'mariadbgtid', 'gtid', 'heartbeat'];

type Row = Record<string, unknown>;
interface RowsEvent {
  getEventName(): string;
  timestamp: number;
  tableId: number;
  tableMap: Record<number, { parentSchema: string; tableName: string }>;
  rows: Array<Row | { before: Row; after: Row }>;
}

export function createMysqlBinlogConnector(config: MysqlSourceConfig, ctx: ConnectorContext): SourceConnector {
  const where = `source "${ctx.sourceName}"`;
  const log = ctx.log;
  let handler: SourceHandler;
  let info: SourceInfo;
  let zongji: ZongJi | undefined;
  let supervisor: Supervisor | undefined;
  let paused = false;
  /** Where the next connection starts: the last checkpoint handed to the pipeline. */
  let resumeFrom: BinlogPosition;
  let acked: BinlogPosition | undefined;
  let inTransaction = false;
  let lagConn: mysql.Connection | undefined;

  const useGtid = () => config.gtid && info.hasGtids;

  async function withConnection<T>(fn: (conn: mysql.Connection) => Promise<T>): Promise<T> {
    const conn = await mysql.createConnection(mysqlConnection(config.url, MYSQL_VALUE_OPTIONS));
    conn.on('error', () => {}); // surfaced through the failing query
    try {
      return await fn(conn);
    } finally {
      await conn.end().catch(() => {});
    }
  }

  /** Row changes of one rows event, for every lens of its table. */
  function rowsEvent(e: RowsEvent): void {
    const table = e.tableMap[e.tableId];
    const lenses = table && info.lensesByTable.get(formatTableName({ schema: table.parentSchema, name: table.tableName }, '`'));
    if (!lenses) return;
    const kind = e.getEventName();
    for (const lens of lenses) {
      for (const row of e.rows) {
        if (kind === 'updaterows') {
          const { before, after } = row as { before: Row; after: Row };
          const oldId = idOf(lens, before);
          // A MINIMAL after image leaves out unchanged columns: the key is then the old one.
          const newId = idOf(lens, after, before);
          if (oldId === undefined || newId === undefined) unreadable(lens, table.tableName);
          else {
            if (newId !== oldId) handler.change({ lens: lens.lens, id: oldId, action: 'delete', committedAt: e.timestamp });
            handler.change({ lens: lens.lens, id: newId, action: 'upsert', committedAt: e.timestamp });
          }
        } else {
          const id = idOf(lens, row as Row);
          if (id === undefined) unreadable(lens, table.tableName);
          else handler.change({ lens: lens.lens, id, action: kind === 'deleterows' ? 'delete' : 'upsert', committedAt: e.timestamp });
        }
      }
    }
  }

  function idOf(lens: LensKey, row: Row, fallback?: Row): string | undefined {
    const values: string[] = [];
    for (const column of lens.keyColumns) {
      const v = row[column] ?? fallback?.[column];
      if (v === undefined || v === null) return undefined;
      values.push(mysqlKeyText(v));
    }
    return encodeMysqlId(values, lens.numeric);
  }

  function unreadable(lens: LensKey, table: string): void {
    log.error({ lens: lens.lens, table }, 'a row change arrived without its key columns (dropped column?); resyncing the lens');
    handler.resync(lens.lens, `a change in ${table} arrived without its key columns`);
  }

  function here(z: ZongJi): BinlogPosition {
    const gtid = useGtid() ? z.gtidSet : undefined;
    return { file: z.get('filename') as string, pos: z.get('position') as number, ...(gtid !== undefined ? { gtid } : {}) };
  }

  function socket(z: ZongJi | undefined): { pause(): void; resume(): void } | undefined {
    return (z?.connection as unknown as { stream?: { pause(): void; resume(): void } } | undefined)?.stream;
  }

  /** One binlog connection, from connect to its end (until `session.signal` aborts). */
  async function streamOnce(session: Session): Promise<void> {
    const z = new ZongJi(mysqlConnection(config.url, MYSQL_VALUE_OPTIONS));
    zongji = z;
    let lastEventAt = Date.now();
    let started = false;
    const from = resumeFrom;
    const end = () => z.stop();
    session.signal.addEventListener('abort', end);
    try {
      await new Promise<void>((resolve, reject) => {
        const watchdog = setInterval(() => {
          if (paused) lastEventAt = Date.now();
          else if (Date.now() - lastEventAt > 3 * config.heartbeatMs) {
            done(new SourceUnavailableError(`${where}: no heartbeat from the server for ${Math.round((3 * config.heartbeatMs) / 1000)} s; reconnecting`));
          }
        }, Math.min(config.heartbeatMs, 5000));
        watchdog.unref();
        const done = (err?: unknown) => {
          clearInterval(watchdog);
          if (err) reject(err);
          else resolve();
        };
        z.on('error', (err: unknown) => done(err));
        z.on('stopped', () => done(session.signal.aborted ? undefined : new SourceUnavailableError(`${where}: the binlog stream ended`)));
        z.on('ready', () => {
          // Queued on the binlog connection ahead of the dump command: idle heartbeats.
          z.connection?.query(`SET @master_heartbeat_period = ${config.heartbeatMs * 1_000_000}`);
        });
        z.on('binlog', (event: unknown) => {
          const e = event as RowsEvent;
          lastEventAt = Date.now();
          if (paused) socket(z)?.pause(); // zongji resumes the socket after its table lookups
          if (!started) {
            started = true;
            // The starting place is safe to save at once: a first start then resumes from it
            // even if it stops before the first transaction or heartbeat.
            handler.checkpoint(formatPosition(from));
            session.streaming();
          }
          switch (e.getEventName()) {
            case 'writerows':
            case 'updaterows':
            case 'deleterows':
              rowsEvent(e);
              break;
            case 'mariadbgtid':
            case 'gtid':
              inTransaction = true;
              break;
            case 'xid':
              inTransaction = false;
              resumeFrom = here(z);
              handler.checkpoint(formatPosition(resumeFrom));
              break;
            case 'heartbeat':
              if (!inTransaction) handler.checkpoint(formatPosition(resumeFrom));
              break;
          }
        });
        inTransaction = false;
        const gtid = useGtid() ? from.gtid : undefined;
        const lensTables = [...info.lensesByTable.keys()].map((t) => splitTableName(t, '`'));
        log.info({ from: describePosition(from), by: gtid !== undefined ? 'gtid' : 'file' }, 'starting binlog stream');
        z.start({
          serverId: config.serverId,
          includeEvents: EVENTS,
          includeSchema: Object.fromEntries(
            [...new Set(lensTables.map((t) => t.schema))].map((db) => [db, lensTables.filter((t) => t.schema === db).map((t) => t.name)]),
          ),
          ...(gtid !== undefined ? { gtidSet: gtid } : { filename: from.file, position: from.pos }),
        });
      });
    } finally {
      session.signal.removeEventListener('abort', end);
      zongji = undefined;
      z.removeAllListeners('binlog');
      z.on('error', () => {});
      z.stop();
    }
  }

  /** Streams from `resumeFrom`; a purged position is handled (./purged) and streaming goes on from the server's current one. */
  async function streamFromHere(session: Session): Promise<void> {
    for (;;) {
      try {
        await checkFileStillThere();
        return await streamOnce(session);
      } catch (err) {
        const error = classifyMysqlError(err, where, config.serverId);
        if (!(error instanceof PurgedPositionError) || session.signal.aborted) throw error;
        await purged(error);
      }
    }
  }

  /** The saved position is gone from the server: start from now, and resync or report. */
  async function purged(err: PurgedPositionError): Promise<void> {
    const lost = resumeFrom;
    resumeFrom = await withConnection((conn) => position(conn, where, info.mariadb, useGtid()));
    const lenses = ctx.lenses.map((l) => l.name);
    if (config.onPurgedPosition === 'resync') {
      log.warn({ lost: describePosition(lost), from: describePosition(resumeFrom), err: err.message }, 'saved binlog position was purged; resyncing every lens');
      for (const lens of lenses) handler.resync(lens, `the binlog position ${describePosition(lost)} was purged from the server`);
      handler.checkpoint(formatPosition(resumeFrom));
      return;
    }
    const detail = (lens: string) =>
      `${where}: the saved binlog position ${describePosition(lost)} is no longer on the server (purged by ` +
      'binlog_expire_logs_seconds / expire_logs_days or PURGE BINARY LOGS), so changes made since then were missed. ' +
      `Streaming goes on from ${describePosition(resumeFrom)}. Recover with \`tributary ingest ${lens} --config FILE --mode full\`` +
      ' (or set onPurgedPosition: resync to do this by itself). Raise the binlog retention so it outlasts Tributary downtime.';
    log.error({ lost: describePosition(lost), from: describePosition(resumeFrom) }, detail(lenses.join(', ')));
    for (const lens of lenses) handler.fullSyncOwed(lens, detail(lens));
    handler.checkpoint(formatPosition(resumeFrom));
  }

  /** A file position that the server no longer has is purged before we even connect. */
  async function checkFileStillThere(): Promise<void> {
    if (useGtid() && resumeFrom.gtid !== undefined) return; // the server answers a purged GTID state itself
    const files = await withConnection(binlogFiles);
    if (!files.some((f) => f.file === resumeFrom.file)) {
      throw new PurgedPositionError(`${where}: binlog file ${resumeFrom.file} is no longer on the server (oldest: ${files[0]?.file ?? 'none'})`);
    }
  }

  return {
    async start(h, saved) {
      handler = h;
      const fresh = saved === undefined;
      let ready = false;
      supervisor = supervise({
        state: (state, detail) => handler.state(state, detail),
        log,
        classify: (err) => classifyMysqlError(err, where, config.serverId),
        // Checks (first session only) and streaming are retried alike; a setup problem rejects `started`.
        session: async (session) => {
          if (!ready) {
            info = await withConnection((conn) => checkSource(conn, where, config, ctx.lenses));
            resumeFrom = fresh ? await withConnection((conn) => position(conn, where, info.mariadb, useGtid())) : parsePosition(saved);
            acked = fresh ? undefined : resumeFrom;
            log.info({ tables: [...info.lensesByTable.keys()], mariadb: info.mariadb, gtid: useGtid(), fresh, from: describePosition(resumeFrom) }, 'source ready');
            ready = true;
          }
          await streamFromHere(session);
        },
      });
      await supervisor.started;
      return { fresh };
    },

    get stopped() {
      return supervisor?.stopped;
    },

    acknowledge(text) {
      const p = parsePosition(text);
      if (acked && comparePositions(p, acked) < 0) return;
      acked = p;
    },

    pause() {
      paused = true;
      socket(zongji)?.pause();
    },

    resume() {
      paused = false;
      socket(zongji)?.resume();
    },

    async lag() {
      if (!acked) return {};
      if (!lagConn) {
        lagConn = await mysql.createConnection(mysqlConnection(config.url, MYSQL_VALUE_OPTIONS));
        lagConn.on('error', () => (lagConn = undefined));
      }
      const files = await binlogFiles(lagConn);
      const from = acked;
      let behind = 0;
      for (const f of files) {
        const cmp = comparePositions({ file: f.file, pos: 0 }, { file: from.file, pos: 0 });
        if (cmp > 0) behind += f.size;
        else if (cmp === 0) behind += Math.max(0, f.size - from.pos);
      }
      return { lagBytes: behind, retainedBytes: files.reduce((n, f) => n + f.size, 0) };
    },

    async stop() {
      await supervisor?.stop();
      await lagConn?.end().catch(() => {});
    },
  };
}

