/**
 * The connector registry: one line per source type and capture mode. Each connector lives in
 * its own folder and exposes one factory returning a SourceConnector (src/types.ts).
 */
import type { MysqlSourceConfig, PostgresSourceConfig, SourceConfig } from '../src/config/types.js';
import type { ConnectorContext, SourceConnector } from '../src/types.js';
import { createMysqlBinlogConnector } from './mysql-binlog/index.js';
import { createPostgresAutoConnector } from './postgres-auto/index.js';
import { createPollConnector } from './poll/index.js';
import { createPostgresLogicalConnector } from './postgres-logical/index.js';
import { createPostgresTriggerConnector } from './postgres-trigger/index.js';

export function createConnector(config: SourceConfig, ctx: ConnectorContext): SourceConnector {
  switch (`${config.type}/${config.capture}`) {
    case 'postgres/logical':
      return createPostgresLogicalConnector(config as PostgresSourceConfig, ctx);
    case 'postgres/trigger':
      return createPostgresTriggerConnector(config as PostgresSourceConfig, ctx);
    case 'postgres/auto':
      return createPostgresAutoConnector(config as PostgresSourceConfig, ctx, (capture) => createConnector({ ...config, capture } as SourceConfig, ctx));
    case 'postgres/poll':
      return createPollConnector(config, ctx);
    case 'mysql/binlog':
      return createMysqlBinlogConnector(config as MysqlSourceConfig, ctx);
    case 'mysql/poll':
      return createPollConnector(config, ctx);
    default:
      throw new Error(`no connector for type ${config.type} with capture ${config.capture}`);
  }
}
