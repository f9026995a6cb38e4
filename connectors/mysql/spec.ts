/**
 * The `mysql` source: a MySQL or MariaDB server, tailed through its row-based binary log
 * (./binlog) or polled (../poll).
 */
import type { PluginProblem, PluginSchema, SourceSpec } from '../../src/plugins.js';
import { parseTableName, qualifyTableName, tableNameProblems } from '../../src/table-name.js';
import { createPollConnector, pollLensProblems } from '../poll/index.js';
import { createMysqlBinlogConnector } from './binlog/index.js';
import { classifyMysqlError } from './errors.js';
import { createMysqlReader } from './reader.js';

/** A MySQL or MariaDB server, tailed through its row-based binary log. */
export interface MysqlSourceConfig {
  type: 'mysql';
  /** `mysql://user:password@host:3306/database`. Never logged with its password. */
  url: string;
  /** `binlog` (default) tails the binary log; `poll` reads lenses by changeTrackingColumn (../poll). */
  capture: 'binlog' | 'poll';
  /**
   * The replica server_id Tributary connects with; unique among the server's replicas.
   * Default: derived from the source name (see `defaultServerId`), from 2,000,000,000 up.
   */
  serverId: number;
  /** The server sends a heartbeat this often on a quiet binlog, ms (default 10000). */
  heartbeatMs: number;
  /**
   * When the saved position is no longer on the server (binlogs purged): `error` streams on
   * from the server's current position with the source in `error` until the lenses are
   * re-read (`tributary ingest LENS --mode full`); `resync` does that full sync by itself.
   */
  onPurgedPosition: 'error' | 'resync';
  /** Resume by GTID when the server has GTIDs (default true); false: by binlog file and position. */
  gtid: boolean;
}

const schema = {
  type: 'object',
  description: "A MySQL (5.7, 8) or MariaDB (10.5+) server, tailed through its row-based binary log.",
  additionalProperties: false,
  required: ['type', 'url'],
  properties: {
    type: { const: 'mysql', description: 'Source type.' },
    url: {
      type: 'string',
      pattern: '^mysql://',
      'x-expected': 'a URL like mysql://tributary:${MYSQL_PASSWORD}@db:3306/app',
      description:
        'mysql://user:password@host:port/database of a user with REPLICATION SLAVE, REPLICATION CLIENT ' +
        '(MariaDB: BINLOG MONITOR) and SELECT on the lens tables. The database is the default for bare lens ' +
        'table names. TLS as MySQL clients: ?ssl-mode=REQUIRED|VERIFY_CA|VERIFY_IDENTITY&ssl-ca=/path/ca.pem ' +
        '(README: Managed PostgreSQL and MySQL). Never logged with its password.',
    },
    capture: {
      type: 'string',
      enum: ['binlog', 'poll'],
      default: 'binlog',
      description:
        'How changes are captured. `binlog`: tail the binary log as a replica (needs log_bin, binlog_format=ROW, ' +
        'binlog_row_image=FULL). `poll`: every lens is read every `syncInterval` by its `changeTrackingColumn` ' +
        '(no deletes: pair it with smartSyncInterval; needs only SELECT).',
    },
    serverId: {
      type: 'integer',
      minimum: 1,
      maximum: 4294967295,
      description:
        "The server_id Tributary connects with, unique among the server's replicas (a second connection with " +
        'the same id disconnects the first). Default: derived from the source name, between 2000000000 and 3999999999.',
    },
    heartbeatMs: {
      type: 'integer',
      minimum: 1000,
      maximum: 3600000,
      default: 10000,
      description:
        'The server sends a heartbeat this often on a quiet binlog (milliseconds); a connection silent for three ' +
        'periods is considered dead and reconnected.',
    },
    onPurgedPosition: {
      type: 'string',
      enum: ['error', 'resync'],
      default: 'error',
      description:
        'When the saved binlog position has been purged from the server: `error` puts the source in error and ' +
        'streams on from the current position (recover with `tributary ingest LENS --mode full` per lens); ' +
        '`resync` queues that full sync of every lens by itself.',
    },
    gtid: {
      type: 'boolean',
      default: true,
      description: 'Resume by GTID when the server has GTIDs (MariaDB always, MySQL with gtid_mode=ON); false: by binlog file and position.',
    },
  },
} satisfies PluginSchema;


export const mysqlSpec: SourceSpec<MysqlSourceConfig> = {
  type: 'mysql',
  schema,
  capabilities: { readsTables: true, requiresPrimaryKey: false },
  problems: ({ name, raw, lenses }) => [
    ...bareTableProblems(name, raw, lenses),
    ...tableNameProblems(lenses, '`'),
    ...(raw.capture === 'poll' ? pollLensProblems(name, lenses) : []),
  ],
  resolve: (raw, name) => ({ serverId: defaultServerId(name), ...raw }) as MysqlSourceConfig,
  qualifyTable: (table, config) => qualifyTableName(table, mysqlDatabase(config.url) ?? '', '`') ?? table,
  create: (config, ctx) =>
    config.capture === 'poll'
      ? createPollConnector(ctx, (lens) => createMysqlReader(config.url, lens), (err) => classifyMysqlError(err, `source "${ctx.sourceName}"`, config.serverId))
      : createMysqlBinlogConnector(config, ctx),
  openReader: (config, options) => createMysqlReader(config.url, options),
};

/** A bare table name needs the database of the url. */
function bareTableProblems(name: string, raw: Record<string, unknown>, lenses: Array<[string, Record<string, unknown>]>): PluginProblem[] {
  if (typeof raw.url !== 'string' || mysqlDatabase(raw.url)) return [];
  return lenses
    .filter(([, lens]) => typeof lens.table === 'string' && parseTableName(lens.table, '`') && !parseTableName(lens.table, '`')!.schema)
    .map(([lens]) => ({ path: ['lenses', lens, 'table'], message: `the url of source "${name}" names no database; write the table as database.table` }));
}

/** The database of a mysql:// URL ('' when it names none). */
export function mysqlDatabase(url: string): string {
  try {
    return decodeURIComponent(new URL(url).pathname.slice(1));
  } catch {
    return '';
  }
}

/**
 * The default replica server_id of a MySQL source: FNV-1a of `tributary:<source name>`, mapped
 * into [2000000000, 4000000000) so it stays clear of the small ids people give real replicas.
 * The same name gives the same id on every start and replica.
 */
export function defaultServerId(sourceName: string): number {
  let h = 2166136261;
  for (const ch of `tributary:${sourceName}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return 2_000_000_000 + (h % 2_000_000_000);
}
