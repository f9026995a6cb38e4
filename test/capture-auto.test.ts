/** capture: auto against real clusters and roles: which mode it picks, why, and that it then delivers. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, databaseName, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, startTestDaemon, testConfig } from './helpers/daemon.js';
import { chooseCapture } from '../connectors/postgres/auto/index.js';
import { installTriggers, resolveTables } from '../connectors/postgres/trigger/setup.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { replyKey } from '../src/control.js';
import type { Config } from '../src/config/types.js';
import { createLogger } from '../src/log.js';
import { openStateStore } from '../src/state/index.js';
import type { ControlReply, ControlRequest } from '../src/types.js';
import type { PostgresSourceConfig } from '../connectors/postgres/spec.js';
import type { ConnectorContext } from '../src/types.js';

let logical: TestPostgres;
let replica: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [logical, replica, sink] = await Promise.all([startPostgres(), startPostgres({ settings: { wal_level: 'replica' } }), startSemilayerServer()]);
});
after(async () => {
  await sink?.close();
  await Promise.all([logical?.stop(), replica?.stop()]);
});

const ROLES = `
  CREATE TABLE t (id int PRIMARY KEY, updated_at timestamptz DEFAULT now());
  DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trig') THEN CREATE ROLE trig LOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plain') THEN CREATE ROLE plain LOGIN; END IF;
  END $$;
  GRANT SELECT, TRIGGER ON t TO trig;
  GRANT SELECT ON t TO plain;`;

/** A database on `cluster` with table `t` and roles `trig` (may create triggers) and `plain` (may only read). */
async function database(cluster: TestPostgres, t: { name: string }) {
  const name = databaseName(t.name);
  const url = await cluster.createDatabase(name);
  await cluster.query(url, ROLES);
  await cluster.query(url, `GRANT CREATE ON DATABASE ${name} TO trig`);
  return { name, url, as: (role: string) => url.replace('postgres@', `${role}@`) };
}

/** What capture: auto decides for `url` (the same probe the connector runs at start). */
async function decide(url: string, options: { changeTrackingColumn?: string; installTriggers?: boolean } = {}) {
  const full = testConfig({ dbUrl: url, sinkUrl: sink.url, lenses: { t: { table: 't', changeTrackingColumn: options.changeTrackingColumn } } });
  const config = full.sources.app as PostgresSourceConfig;
  config.installTriggers = options.installTriggers ?? true;
  const ctx: ConnectorContext = {
    sourceName: 'app',
    lenses: [{ name: 't', table: 'public.t', config: full.lenses.t }],
    log: createLogger({ level: 'fatal' }),
    report: { state() {}, capture() {} },
  };
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await chooseCapture(client, config, ctx);
  } finally {
    await client.end();
  }
}

describe('capture: auto', () => {
  test('wal_level=logical and a role that may replicate: logical, and it delivers through a slot', async (t) => {
    const db = await database(logical, t);
    assert.deepEqual(await decide(db.url), { mode: 'logical', reason: 'wal_level is logical and the role may replicate' });

    const config = testConfig({ dbUrl: db.url, sinkUrl: sink.url, slot: db.name, lenses: { [`${db.name}_t`]: { table: 't', initialSync: 'none' } } });
    config.sources.app.capture = 'auto';
    const daemon = await startTestDaemon(config);
    await logical.query(db.url, `INSERT INTO t (id) VALUES (1)`);
    await eventually(() => sink.lastAction(`${db.name}_t`).get('1') === 'upsert', 'id 1');
    assert.equal((await logical.query(db.url, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1`, [db.name]))[0].n, 1);
    assert.deepEqual(daemon.status().lenses[0].capture, { mode: 'logical', reason: 'wal_level is logical and the role may replicate' });
    assert.equal(await daemon.stop(), 0);
  });

  test('a role without REPLICATION that may create triggers: trigger, and it delivers through the changelog', async (t) => {
    const db = await database(logical, t);
    const reason = 'role trig has no REPLICATION attribute; the role may install triggers';
    assert.deepEqual(await decide(db.as('trig')), { mode: 'trigger', reason });

    const config = testConfig({ dbUrl: db.as('trig'), sinkUrl: sink.url, slot: db.name, lenses: { [`${db.name}_t`]: { table: 't', initialSync: 'none' } } });
    config.sources.app.capture = 'auto';
    const daemon = await startTestDaemon(config);
    await logical.query(db.url, `INSERT INTO t (id) VALUES (1)`);
    await eventually(() => sink.lastAction(`${db.name}_t`).get('1') === 'upsert', 'id 1');
    assert.equal((await logical.query(db.url, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE database = current_database()`))[0].n, 0, 'no slot');
    assert.deepEqual(daemon.status().lenses[0].capture, { mode: 'trigger', reason });
    assert.equal(await daemon.stop(), 0);
  });

  test('wal_level=replica: trigger, even for a superuser', async (t) => {
    const db = await database(replica, t);
    assert.deepEqual(await decide(db.url), { mode: 'trigger', reason: 'wal_level is replica, not logical; the role may install triggers' });
  });

  test('installTriggers: false: trigger only once the triggers are installed', async (t) => {
    const db = await database(replica, t);
    const before = await decide(db.as('plain'), { installTriggers: false, changeTrackingColumn: 'updated_at' });
    assert.equal(before.mode, 'poll');
    assert.match(before.reason, /not installed and installTriggers is false/);
    // What `tributary triggers install` runs, as the superuser.
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    await installTriggers(client, 'test', 'tributary', 'app', await resolveTables(client, 'test', [{ name: 't', table: 'public.t' }]));
    await client.query(`GRANT USAGE ON SCHEMA tributary TO plain; GRANT SELECT, DELETE ON tributary.changelog TO plain`);
    await client.end();
    assert.deepEqual(await decide(db.as('plain'), { installTriggers: false }), {
      mode: 'trigger',
      reason: 'wal_level is replica, not logical; the capture triggers are installed',
    });
  });

  test('auto that chose poll runs the poll connector whole: its saved cursor after a restart, pause, ingest --mode incremental', async (t) => {
    const db = await database(logical, t);
    await logical.query(db.url, `INSERT INTO t (id) SELECT g FROM generate_series(1, 500) g`);
    const lens = `${db.name}_t`;
    const config = testConfig({ dbUrl: db.as('plain'), sinkUrl: sink.url, slot: db.name, lenses: { [lens]: { table: 't', initialSync: 'none', changeTrackingColumn: 'updated_at', syncInterval: '1s', syncOverlap: '0s' } } });
    config.sources.app.capture = 'auto';
    const first = await startTestDaemon(config);
    await eventually(() => sink.counts(lens) === 500, 'the 500 rows polled');
    assert.equal(await first.stop(), 0);

    const second = await startTestDaemon(config);
    await sleep(3000); // three polls
    assert.equal(sink.counts(lens), 500, 'a restart resumes from the saved cursor: unchanged rows are not polled again');

    assert.equal((await request(config, { kind: 'pause', lens })).ok, true);
    await logical.query(db.url, `UPDATE t SET updated_at = now() WHERE id = 7`);
    await sleep(2500);
    assert.equal(sink.counts(lens), 500, 'a paused lens is not polled');
    assert.equal((await request(config, { kind: 'resume', lens })).ok, true);
    await eventually(() => sink.counts(lens) === 501, 'the update polled once resumed');

    const reply = await request(config, { kind: 'ingest', lens, mode: 'incremental' });
    assert.deepEqual(reply, { ok: true, message: `requested an incremental sync of lens ${lens}`, at: reply.at });
    assert.equal(sink.requests.filter((r) => r.lens === lens && r.mode === 'incremental').length, 0, 'the lens polls now instead of asking the sink');
    assert.equal(await second.stop(), 0);
  });

  test('a role that may neither replicate nor create triggers: poll with a changeTrackingColumn (and it delivers), else an error that says what to set', async (t) => {
    const db = await database(logical, t);
    const choice = await decide(db.as('plain'), { changeTrackingColumn: 'updated_at' });
    assert.equal(choice.mode, 'poll');
    assert.match(choice.reason, /^role plain has no REPLICATION attribute; no triggers: .*GRANT CREATE ON DATABASE .* TO "plain".*GRANT TRIGGER ON "public"\."t" TO "plain"/);

    const lens = `${db.name}_t`;
    const config = testConfig({ dbUrl: db.as('plain'), sinkUrl: sink.url, slot: db.name, lenses: { [lens]: { table: 't', initialSync: 'none', changeTrackingColumn: 'updated_at', syncInterval: '1s' } } });
    config.sources.app.capture = 'auto';
    const daemon = await startTestDaemon(config);
    await logical.query(db.url, `INSERT INTO t (id) VALUES (1)`);
    await eventually(() => sink.lastAction(lens).get('1') === 'upsert', 'id 1 polled');
    assert.equal(daemon.status().lenses[0].capture?.mode, 'poll');
    assert.equal(await daemon.stop(), 0);

    await assert.rejects(decide(db.as('plain')), (err: Error) => {
      assert.match(err.message, /capture: auto found no mode that works\. logical: role plain has no REPLICATION attribute\. trigger: .*GRANT TRIGGER/);
      assert.match(err.message, /poll: lens\(es\) t have no changeTrackingColumn; set changeTrackingColumn/);
      return true;
    });
  });
});

/** Sends an operator request to the daemon running on `config`'s state, and waits for its reply. */
async function request(config: Config, req: ControlRequest): Promise<ControlReply> {
  const store = await openStateStore(config.state, { readOnly: true });
  try {
    const id = await store.sendRequest(req);
    let reply: ControlReply | undefined;
    await eventually(async () => (reply = await store.get<ControlReply>(replyKey(id))) !== undefined, `a reply to ${req.kind}`);
    return reply!;
  } finally {
    await store.close();
  }
}
