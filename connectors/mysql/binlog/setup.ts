/**
 * What the binlog connector checks before it streams: binary logging settings, privileges, the
 * lens tables and their keys; and how it reads the server's current position. Every failure
 * is a SourceSetupError that says what to change.
 */
import type { Connection } from 'mysql2/promise';
import type { MysqlSourceConfig } from '../spec.js';
import { SourceSetupError } from '../../../src/errors.js';
import { isMysqlNumericType } from '../ids.js';
import { mysqlColumns, primaryKeyOf } from '../reader.js';
import type { BinlogPosition } from './position.js';

export interface LensKey {
  lens: string;
  keyColumns: string[];
  /** Per key column: a number type (written as a JSON number in composite ids). */
  numeric: boolean[];
}

export interface SourceInfo {
  /** `database.table` → the lenses reading it. */
  lensesByTable: Map<string, LensKey[]>;
  mariadb: boolean;
  /** The server writes GTIDs (MariaDB always; MySQL with gtid_mode=ON). */
  hasGtids: boolean;
}

async function rows(conn: Connection, sql: string, params: unknown[] = []): Promise<Array<Record<string, any>>> {
  return (await conn.query(sql, params))[0] as Array<Record<string, any>>;
}

export async function checkSource(
  conn: Connection,
  where: string,
  config: MysqlSourceConfig,
  lenses: Array<{ name: string; table: string; primaryKey?: string[] }>,
): Promise<SourceInfo> {
  const [v] = await rows(conn, 'SELECT VERSION() AS version, @@log_bin AS logBin, @@binlog_format AS format, @@binlog_row_image AS image, @@server_id AS serverId');
  const mariadb = /mariadb/i.test(v.version);
  if (Number(v.logBin) !== 1) {
    throw new SourceSetupError(
      `${where}: binary logging is off. Start the server with log_bin and a server_id (in my.cnf [mysqld]: log_bin=mysql-bin, ` +
        'server_id=1, binlog_format=ROW); on Amazon RDS enable automated backups, or use capture: poll.',
    );
  }
  if (String(v.format).toUpperCase() !== 'ROW') {
    throw new SourceSetupError(
      `${where}: binlog_format is ${v.format}; the binlog connector needs ROW. Run SET GLOBAL binlog_format = 'ROW' and set ` +
        'binlog_format=ROW in my.cnf (or the RDS parameter group) so it survives a restart; sessions already open keep ' +
        'the old format until they reconnect.',
    );
  }
  if (Number(v.serverId) === config.serverId) {
    throw new SourceSetupError(`${where}: serverId ${config.serverId} is the server's own server_id; set serverId: on this source to another number.`);
  }
  await position(conn, where, mariadb, false); // checks REPLICATION CLIENT / BINLOG MONITOR
  if (!mariadb) await mysqlOnlySettings(conn, where);
  const image = String(v.image).toUpperCase();
  const hasGtids = mariadb || String((await rows(conn, 'SELECT @@gtid_mode AS mode'))[0].mode).toUpperCase() === 'ON';

  const lensesByTable = new Map<string, LensKey[]>();
  for (const lens of lenses) {
    const columns = await mysqlColumns((sql, params) => rows(conn, sql, params), lens.table);
    if (columns.length === 0) {
      throw new SourceSetupError(`${where}: table ${lens.table} of lens "${lens.name}" does not exist (or this user has no SELECT on it).`);
    }
    const pk = primaryKeyOf(columns);
    const keyColumns = lens.primaryKey ?? pk;
    if (keyColumns.length === 0) {
      throw new SourceSetupError(`${where}: table ${lens.table} of lens "${lens.name}" has no primary key. Add one, or set primaryKey: [...] on the lens.`);
    }
    const missing = keyColumns.filter((c) => !columns.some((col) => col.name === c));
    if (missing.length) {
      throw new SourceSetupError(`${where}: lens "${lens.name}": primaryKey column(s) ${missing.join(', ')} not in table ${lens.table}.`);
    }
    if (image !== 'FULL' && !(pk.length > 0 && keyColumns.every((c) => pk.includes(c)))) {
      throw new SourceSetupError(
        `${where}: binlog_row_image is ${image} and the key of lens "${lens.name}" (${keyColumns.join(', ')}) is not part of ` +
          `the primary key of ${lens.table}, so updates and deletes would not carry it. Run SET GLOBAL binlog_row_image = 'FULL' ` +
          '(and set it in my.cnf), or key the lens by the primary key.',
      );
    }
    const numeric = keyColumns.map((c) => isMysqlNumericType(columns.find((col) => col.name === c)!.dataType));
    const list = lensesByTable.get(lens.table) ?? [];
    list.push({ lens: lens.name, keyColumns, numeric });
    lensesByTable.set(lens.table, list);
  }
  return { lensesByTable, mariadb, hasGtids };
}

/** MySQL 8 settings whose events the binlog reader cannot decode (it would skip those changes). */
async function mysqlOnlySettings(conn: Connection, where: string): Promise<void> {
  const setting = async (name: string) => {
    try {
      return String((await rows(conn, `SELECT @@${name} AS v`))[0].v).toUpperCase();
    } catch {
      return undefined; // older servers do not have it
    }
  };
  if (['1', 'ON'].includes((await setting('binlog_transaction_compression')) ?? '')) {
    throw new SourceSetupError(`${where}: binlog_transaction_compression is ON; compressed transactions cannot be read. Run SET GLOBAL binlog_transaction_compression = OFF (and in my.cnf).`);
  }
  if ((await setting('binlog_row_value_options'))?.includes('PARTIAL_JSON')) {
    throw new SourceSetupError(`${where}: binlog_row_value_options is PARTIAL_JSON; partial JSON updates cannot be read. Run SET GLOBAL binlog_row_value_options = '' (and in my.cnf).`);
  }
}

/**
 * The server's current end of binlog: file and offset, with the GTID position there when
 * `withGtid` (MariaDB: BINLOG_GTID_POS of that very place; MySQL: the same status row's set).
 */
export async function position(conn: Connection, where: string, mariadb: boolean, withGtid: boolean): Promise<BinlogPosition> {
  let status: Record<string, any> | undefined;
  try {
    [status] = await rows(conn, 'SHOW MASTER STATUS');
  } catch (err) {
    if ((err as { errno?: number }).errno !== 1064) throw err;
    [status] = await rows(conn, 'SHOW BINARY LOG STATUS'); // MySQL 8.4 dropped SHOW MASTER STATUS
  }
  if (!status) throw new SourceSetupError(`${where}: SHOW MASTER STATUS returned nothing: binary logging is off. Start the server with log_bin.`);
  const p: BinlogPosition = { file: String(status.File), pos: Number(status.Position) };
  if (withGtid) {
    p.gtid = mariadb
      ? String((await rows(conn, 'SELECT BINLOG_GTID_POS(?, ?) AS gtid', [p.file, p.pos]))[0].gtid ?? '')
      : String(status.Executed_Gtid_Set ?? '').replace(/\s/g, '');
  }
  return p;
}

/** The binlog files the server still has, oldest first, with their sizes. */
export async function binlogFiles(conn: Connection): Promise<Array<{ file: string; size: number }>> {
  return (await rows(conn, 'SHOW BINARY LOGS')).map((r) => ({ file: String(r.Log_name), size: Number(r.File_size) }));
}
