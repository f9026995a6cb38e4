/**
 * The connector contract (test/helpers/connector-contract.ts) against every source connector
 * and capture mode: postgres logical, trigger, poll and auto; mysql binlog and poll; kinesis
 * (DMS records in kinesalite). Each test gets its own database (or stream), named from a hash
 * of its title.
 */
import { after, before } from 'node:test';
import { defaultServerId, type MysqlSourceConfig } from '../connectors/mysql/spec.js';
import type { PostgresSourceConfig } from '../connectors/postgres/spec.js';
import { dmsRecord, startKinesis, type TestKinesis } from './helpers/kinesis.js';
import { connectorContract, lensConfig, type ConnectorFixture, type ContractSource } from './helpers/connector-contract.js';
import { startMariadb, type TestMariadb } from './helpers/mariadb.js';
import { databaseName, startPostgres, type TestPostgres } from './helpers/postgres.js';

let pg: TestPostgres;
let my: TestMariadb;
/** Started by the first kinesis test. */
let kinesis: TestKinesis | undefined;

before(async () => {
  [pg, my] = await Promise.all([startPostgres(), startMariadb()]);
});
after(async () => {
  await Promise.all([pg?.stop(), my?.stop(), kinesis?.stop()]);
});

/** Polled lenses: read every second, no overlap (so an acknowledged row is not read again). */
const POLLED = { changeTrackingColumn: 'updated_at', syncInterval: '1s', syncOverlap: '0s' };

function postgres(capture: PostgresSourceConfig['capture'], handsOver?: string): ConnectorFixture {
  return {
    name: `postgres ${capture}`,
    resumesFromSaved: (handsOver ?? capture) === 'poll',
    handsOver,
    async source(testName): Promise<ContractSource> {
      const name = databaseName(testName);
      const url = await pg.createDatabase(name);
      await pg.query(url, `CREATE TABLE items (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT clock_timestamp())`);
      const config: PostgresSourceConfig = {
        type: 'postgres', url, capture, slot: name, publication: name, statusIntervalMs: 1000, installTriggers: true, triggerSchema: 'tributary',
      };
      return {
        config,
        lens: { name: 'items', table: 'public.items', config: lensConfig('app', 'public.items', POLLED) },
        insert: async (ids) => void (await pg.query(url, `INSERT INTO items (id) SELECT unnest($1::int[])`, [ids])),
      };
    },
  };
}

function mysql(capture: MysqlSourceConfig['capture']): ConnectorFixture {
  return {
    name: `mysql ${capture}`,
    resumesFromSaved: true,
    async source(testName): Promise<ContractSource> {
      const name = databaseName(testName);
      const url = await my.createDatabase(name);
      await my.query(`CREATE TABLE items (id int PRIMARY KEY, updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6))`, [], name);
      const config: MysqlSourceConfig = {
        type: 'mysql', url, capture, serverId: defaultServerId(name), heartbeatMs: 1000, onPurgedPosition: 'error', gtid: true,
      };
      return {
        config,
        lens: { name: 'items', table: `${name}.items`, config: lensConfig('app', `${name}.items`, POLLED) },
        insert: async (ids) => void (await my.query(`INSERT INTO items (id) VALUES ${ids.map(() => '(?)').join(', ')}`, ids, name)),
      };
    },
  };
}

connectorContract(postgres('logical'));
connectorContract(postgres('trigger'));
connectorContract(postgres('poll'));
// The test server allows logical replication, so auto must hand over to the logical connector.
connectorContract(postgres('auto', 'logical'));
connectorContract(mysql('binlog'));
connectorContract(mysql('poll'));

/** DMS records in a two-shard kinesalite stream, one per test. */
const kinesisDms: ConnectorFixture = {
  name: 'kinesis dms',
  resumesFromSaved: true,
  async source(testName): Promise<ContractSource> {
    const k = (kinesis ??= await startKinesis());
    const stream = databaseName(testName);
    await k.createStream(stream, 2);
    return {
      config: k.sourceConfig(stream),
      lens: { name: 'items', table: 'public.items', primaryKey: ['id'], config: lensConfig('app', 'public.items', { primaryKey: ['id'] }) },
      insert: (ids) => k.put(stream, ids.map((id) => dmsRecord('public.items', 'insert', { id }))),
    };
  },
};
connectorContract(kinesisDms);
