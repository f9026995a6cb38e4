/**
 * Partitioned tables as lens tables: logical capture through a publication Tributary creates
 * (kill -9 included) and through existing ones with and without publish_via_partition_root,
 * partitions created while streaming or attached while the daemon is down, rows moved across
 * partitions, trigger capture, polling with smart sync, and the worker's reads of the root.
 * Every touched id's last delivered action is checked against the table.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, databaseName, freePort, type TestPostgres } from './helpers/postgres.js';
import { parseConfig } from '../src/config/load.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, killChildren, spawnDaemon, startError, startTestDaemon, stopDaemon, testConfig } from './helpers/daemon.js';
import pg from 'pg';
import { encodeId } from '../src/ids.js';
import { uninstallTriggers } from '../connectors/postgres/trigger/setup.js';
import { createPostgresReader } from '../connectors/postgres/reader.js';
import type { LensConfig } from '../src/config/types.js';

let cluster: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [cluster, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  killChildren();
  await sink?.close();
  await cluster?.stop();
});

/** The issue's table: range-partitioned by month, January and February to start with. */
const EVENTS = `
  CREATE TABLE events (id bigint, at date, kind text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                       PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE events_jan PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
  CREATE TABLE events_feb PARTITION OF events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
  CREATE TABLE audit (id int PRIMARY KEY);`;

const month = (m: number) => `2024-${String(m).padStart(2, '0')}-01`;
const idOf = (id: string | number, at: string) => encodeId([String(id), at], [20, 1082]);

/** Writes to `events` and remembers every id it touched. */
class Workload {
  readonly touched = new Set<string>();
  private next = 1;
  constructor(private readonly sql: (text: string, params?: unknown[]) => Promise<any[]>) {}

  /** `n` new rows spread over `months`. */
  async insert(n: number, months: number[]): Promise<void> {
    const rows: string[] = [];
    for (let i = 0; i < n; i++, this.next++) {
      const at = `2024-${String(months[i % months.length]).padStart(2, '0')}-${String((this.next % 28) + 1).padStart(2, '0')}`;
      rows.push(`(${this.next}, '${at}', 'k${this.next % 5}')`);
      this.touched.add(idOf(this.next, at));
    }
    await this.sql(`INSERT INTO events (id, at, kind) VALUES ${rows.join(', ')}`);
  }

  /** Moves `n` rows of month `from` to month `to` (another partition): the key changes. */
  async move(n: number, from: number, to: number): Promise<void> {
    const moved = await this.sql(
      `WITH old AS (SELECT id, at FROM events WHERE at >= $1 AND at < $1::date + interval '1 month' ORDER BY id LIMIT ${n})
       UPDATE events e SET at = make_date(2024, ${to}, extract(day FROM e.at)::int), updated_at = clock_timestamp()
         FROM old WHERE e.id = old.id AND e.at = old.at RETURNING e.id::text, old.at::text AS old_at, e.at::text AS new_at`,
      [month(from)],
    );
    assert.equal(moved.length, n, `${n} rows moved from month ${from}`);
    for (const r of moved) this.touched.add(idOf(r.id, r.old_at)).add(idOf(r.id, r.new_at));
  }

  async delete(n: number): Promise<void> {
    const gone = await this.sql(`DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id DESC LIMIT ${n}) RETURNING id::text, at::text`);
    for (const r of gone) this.touched.add(idOf(r.id, r.at));
  }

  /** Waits until the sink's last action of every touched id matches the table, and nothing else arrived. */
  async delivered(lens: string, timeoutMs = 30_000): Promise<void> {
    const present = new Set((await this.sql('SELECT id::text, at::text FROM events')).map((r) => idOf(r.id, r.at)));
    const wrong = () => [...this.touched].filter((id) => sink.lastAction(lens).get(id) !== (present.has(id) ? 'upsert' : 'delete'));
    await eventually(() => wrong().length === 0, `every id's last action for ${lens} (wrong: ${wrong().slice(0, 5).join(' ')})`, timeoutMs).catch(() => {
      throw new Error(`lens ${lens}: ${wrong().length} ids with a wrong last action, e.g. ${wrong().slice(0, 5).map((id) => `${id}=${sink.lastAction(lens).get(id)}`).join(' ')}`);
    });
    assert.deepEqual([...sink.lastAction(lens).keys()].filter((id) => !this.touched.has(id)), [], 'only touched ids were delivered');
  }
}

async function database(t: { name: string }) {
  const name = databaseName(t.name);
  const db = await cluster.createDatabase(name);
  await cluster.query(db, EVENTS);
  const sql = (text: string, params?: unknown[]) => cluster.query(db, text, params);
  return { name, db, sql, work: new Workload(sql), lens: `${name}_events` };
}

function config(db: string, name: string, lens: string, overrides: Partial<LensConfig> = {}, dataDir?: string) {
  return testConfig({ dbUrl: db, sinkUrl: sink.url, slot: name, dataDir, lenses: { [lens]: { table: 'events', initialSync: 'none', ...overrides } } });
}

/** The unmatched-changes counter of a daemon, as text. */
const unmatchedMetric = async (daemon: { metrics: { registry: { getSingleMetricAsString(name: string): Promise<string> } } }) =>
  daemon.metrics.registry.getSingleMetricAsString('tributary_changes_unmatched_total');

describe('partitioned tables', () => {
  test('logical, a publication Tributary creates: partitions created while streaming and attached while down, moves, deletes, kill -9', async (t) => {
    const s = await database(t);
    const state = mkdtempSync(join(tmpdir(), 'tributary-partitions-'));
    const yaml = `
sources:
  app: { type: postgres, url: "${s.db}", slot: ${s.name}, publication: ${s.name} }
lenses:
  ${s.lens}: { source: app, table: events, sink: hosted, initialSync: none, maxWaitMs: 20 }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: embedded, path: "${state}" }
metrics: false
pipeline: { errorRetryMs: 300, drainTimeoutMs: 10000 }
log: { level: info }
`;
    const streaming = async (d: ReturnType<typeof spawnDaemon>) =>
      eventually(async () => /streaming/.test(d.output()) && (await s.sql(`SELECT 1 FROM pg_replication_slots WHERE slot_name = '${s.name}' AND active`)).length > 0, 'the daemon streaming', 20_000);
    let daemon = spawnDaemon(yaml);
    await streaming(daemon);
    const [pub] = await s.sql(`SELECT pubviaroot FROM pg_publication WHERE pubname = '${s.name}'`);
    assert.equal(pub.pubviaroot, false, 'the publication publishes the partitions (a TRUNCATE of one is published)');

    await s.work.insert(300, [1, 2]);
    await s.work.move(10, 1, 2);
    await s.sql(`CREATE TABLE events_mar PARTITION OF events FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')`);
    await s.work.insert(60, [3]);
    await eventually(() => sink.received(s.lens).length > 0, 'some deliveries before the kill');
    daemon.child.kill('SIGKILL');
    await daemon.exited;

    // While the daemon is down: a table attached as a partition, written before and after.
    await s.sql(`CREATE TABLE events_apr (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`);
    await s.sql(`ALTER TABLE events_apr ADD PRIMARY KEY (id, at)`);
    await s.sql(`ALTER TABLE events ATTACH PARTITION events_apr FOR VALUES FROM ('2024-04-01') TO ('2024-05-01')`);
    await s.work.insert(40, [4]);
    await s.work.move(10, 2, 4);
    await s.work.delete(10);

    daemon = spawnDaemon(yaml);
    await streaming(daemon);
    await s.work.insert(200, [1, 2, 3, 4]);
    await s.work.move(10, 3, 1);
    await s.work.delete(10);
    await s.work.delivered(s.lens);
    assert.doesNotMatch(daemon.output(), /match no lens/, 'no change went unmatched');
    await stopDaemon(daemon);
  });

  for (const viaRoot of [false, true]) {
    test(`logical, an existing FOR ALL TABLES publication ${viaRoot ? 'with' : 'without'} publish_via_partition_root: leaves routed to the root's lens, other tables counted`, async (t) => {
      const s = await database(t);
      await s.sql(`CREATE PUBLICATION userpub_${viaRoot} FOR ALL TABLES WITH (publish_via_partition_root = ${viaRoot})`);
      const cfg = config(s.db, s.name, s.lens);
      cfg.sources.app = { ...cfg.sources.app, publication: `userpub_${viaRoot}` } as typeof cfg.sources.app;
      let daemon = await startTestDaemon(cfg);
      await s.work.insert(200, [1, 2]);
      await s.sql(`CREATE TABLE events_mar PARTITION OF events FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')`);
      await s.work.insert(30, [3]);
      await s.work.move(10, 1, 3);
      await s.work.delete(10);
      await s.sql(`INSERT INTO audit VALUES (1), (2)`);
      // A table that becomes a partition while streaming: its changes before are not the lens's, after are.
      await s.sql(`CREATE TABLE events_may (LIKE events INCLUDING DEFAULTS); INSERT INTO events_may (id, at) VALUES (100000, '2024-05-05')`);
      await eventually(async () => /table="public.events_may"} 1/.test(await unmatchedMetric(daemon)), 'the standalone table counted as unmatched');
      await s.sql(`ALTER TABLE events ATTACH PARTITION events_may FOR VALUES FROM ('2024-05-01') TO ('2024-06-01')`);
      await s.work.insert(10, [5]);
      await s.work.move(2, 5, 1);
      await s.work.delivered(s.lens);
      await eventually(async () => /table="public.audit"} 2/.test(await unmatchedMetric(daemon)), 'the audit changes counted as unmatched');
      assert.equal(await daemon.stop(), 0);

      await s.sql(`CREATE TABLE events_apr (LIKE events INCLUDING DEFAULTS)`);
      await s.sql(`ALTER TABLE events ATTACH PARTITION events_apr FOR VALUES FROM ('2024-04-01') TO ('2024-05-01')`);
      await s.work.insert(20, [4]);
      await s.work.move(5, 2, 4);
      daemon = await startTestDaemon(cfg);
      await s.work.insert(20, [1, 4]);
      await s.work.delivered(s.lens);
      assert.doesNotMatch(await unmatchedMetric(daemon), /events_(jan|feb|mar|apr)/, 'no partition change went unmatched');
      assert.equal(await daemon.stop(), 0);
    });
  }

  test('logical, an existing publication of only some partitions is a setup error saying what to run; the root added, it streams', async (t) => {
    const s = await database(t);
    await s.sql(`CREATE PUBLICATION leafpub FOR TABLE events_jan`);
    const cfg = config(s.db, s.name, s.lens);
    cfg.sources.app = { ...cfg.sources.app, publication: 'leafpub' } as typeof cfg.sources.app;
    const message = await startError(cfg);
    assert.match(message, /publication "leafpub".*does not include public\.events \(partitions public\.events_feb are not published\)/);
    assert.match(message, /ALTER PUBLICATION "leafpub" ADD TABLE "public"."events"/);
    await s.sql(`ALTER PUBLICATION leafpub ADD TABLE events_feb`);
    const daemon = await startTestDaemon(cfg);
    await s.work.insert(20, [1, 2]);
    await s.work.move(3, 1, 2);
    await s.work.delivered(s.lens);
    assert.equal(await daemon.stop(), 0);
  });

  test('logical, a Tributary publication publishing via the partition root is altered to publish the partitions', async (t) => {
    const s = await database(t);
    await s.sql(`CREATE PUBLICATION ${s.name} FOR TABLE events WITH (publish_via_partition_root = true); COMMENT ON PUBLICATION ${s.name} IS 'managed by tributary'`);
    const cfg = config(s.db, s.name, s.lens);
    cfg.sources.app = { ...cfg.sources.app, publication: s.name } as typeof cfg.sources.app;
    const daemon = await startTestDaemon(cfg);
    assert.equal((await s.sql(`SELECT pubviaroot FROM pg_publication WHERE pubname = '${s.name}'`))[0].pubviaroot, false);
    await s.work.insert(20, [1, 2]);
    await s.work.move(3, 2, 1);
    await s.work.delete(3);
    await s.work.delivered(s.lens);
    assert.equal(await daemon.stop(), 0);
  });

  test('trigger capture on the root: every partition, one created later, moves and deletes', async (t) => {
    const s = await database(t);
    const cfg = config(s.db, s.name, s.lens);
    cfg.sources.app = { ...cfg.sources.app, capture: 'trigger', triggerSchema: s.name } as typeof cfg.sources.app;
    const daemon = await startTestDaemon(cfg);
    await s.work.insert(100, [1, 2]);
    await s.sql(`CREATE TABLE events_mar PARTITION OF events FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')`);
    await s.work.insert(20, [3]);
    await s.work.move(10, 1, 3);
    await s.work.delete(10);
    await s.sql(`INSERT INTO events_feb (id, at) VALUES (900, '2024-02-02')`); // a partition written directly
    s.work.touched.add(idOf(900, '2024-02-02'));
    await s.work.delivered(s.lens);
    assert.equal(await daemon.stop(), 0);
    const client = new pg.Client({ connectionString: s.db });
    await client.connect();
    try {
      await uninstallTriggers(client, s.name, 'app', 'public.events');
    } finally {
      await client.end();
    }
    assert.deepEqual(await s.sql(`SELECT tgname FROM pg_trigger WHERE tgname LIKE 'tributary%'`), [], 'no trigger left on the root or a partition');
  });

  test('polling the root with smart sync: rows of every partition, moves (old ids deleted by the sweep), deletes', async (t) => {
    const s = await database(t);
    await s.sql(`CREATE INDEX ON events (updated_at, id, at)`);
    const cfg = config(s.db, s.name, s.lens, { changeTrackingColumn: 'updated_at', syncInterval: '1s', syncOverlap: '1s', smartSyncInterval: '2s' });
    cfg.sources.app = { ...cfg.sources.app, capture: 'poll' } as typeof cfg.sources.app;
    const daemon = await startTestDaemon(cfg);
    await s.work.insert(60, [1, 2]);
    await eventually(() => sink.lastAction(s.lens).size >= 60, 'the first poll', 15_000);
    await s.work.move(5, 1, 2);
    await s.work.delete(5);
    await s.work.delivered(s.lens, 20_000);
    assert.equal(await daemon.stop(), 0);
  });

  test('inheritance: logical capture routes a child\'s changes to the parent\'s lens; trigger capture refuses with what to do', async (t) => {
    const s = await database(t);
    await s.sql(`CREATE TABLE notes (id int PRIMARY KEY, body text); CREATE TABLE notes_2024 (PRIMARY KEY (id)) INHERITS (notes)`);
    const lens = `${s.name}_notes`;
    const cfg = testConfig({ dbUrl: s.db, sinkUrl: sink.url, slot: s.name, lenses: { [lens]: { table: 'notes', initialSync: 'none' } } });
    const daemon = await startTestDaemon(cfg);
    await s.sql(`INSERT INTO notes VALUES (1, 'parent'); INSERT INTO notes_2024 VALUES (2, 'child'); DELETE FROM notes_2024 WHERE id = 2; INSERT INTO notes_2024 VALUES (3, 'child')`);
    await eventually(() => sink.lastAction(lens).get('1') === 'upsert' && sink.lastAction(lens).get('2') === 'delete' && sink.lastAction(lens).get('3') === 'upsert', 'the child changes on the parent lens');
    assert.equal(await daemon.stop(), 0);

    const triggers = testConfig({ dbUrl: s.db, sinkUrl: sink.url, slot: s.name, lenses: { [lens]: { table: 'notes', initialSync: 'none' } } });
    triggers.sources.app = { ...triggers.sources.app, capture: 'trigger', triggerSchema: s.name } as typeof triggers.sources.app;
    assert.match(await startError(triggers), /has inheritance children \(notes_2024\).*Use capture: logical/);
  });

  for (const capture of ['logical', 'trigger'] as const) {
    test(`${capture}: a TRUNCATE of one partition asks for a full sync of the root's lens`, async (t) => {
      const s = await database(t);
      const cfg = config(s.db, s.name, s.lens);
      cfg.sources.app = { ...cfg.sources.app, capture, triggerSchema: s.name } as typeof cfg.sources.app;
      const daemon = await startTestDaemon(cfg);
      await s.work.insert(10, [1, 2]);
      await s.work.delivered(s.lens);
      await s.sql(`TRUNCATE events_jan`);
      await eventually(() => sink.requests.some((r) => r.lens === s.lens && r.mode === 'full'), 'a full sync of the lens');
      assert.equal(await daemon.stop(), 0);
    });
  }

  test('the bundled worker on the root: a full sync across partitions, then a moved row re-read under its new id', async (t) => {
    const s = await database(t);
    await s.sql(`INSERT INTO events (id, at, kind) VALUES (1, '2024-01-10', 'blue ceramic teapot'), (2, '2024-02-10', 'green glass vase')`);
    const port = await freePort();
    const cfg = parseConfig(
      `
sources:
  app: { type: postgres, url: "${s.db}", slot: ${s.name}, publication: ${s.name} }
lenses:
  ${s.lens}: { source: app, table: events, sink: local, fields: [kind], metadata: [at], maxWaitMs: 10 }
sinks:
  local: { type: worker }
worker:
  listen: 127.0.0.1:${port}
  keys: [{ key: sk_search, scope: search }]
state: { type: embedded, path: ./state }
metrics: false
`,
      join(mkdtempSync(join(tmpdir(), 'tributary-partitions-worker-')), 'tributary.yaml'),
      {},
    );
    const daemon = await startTestDaemon(cfg);
    const search = async (query: string) =>
      ((await (
        await fetch(`http://127.0.0.1:${port}/v1/search/${s.lens}`, {
          method: 'POST',
          headers: { authorization: 'Bearer sk_search', 'content-type': 'application/json' },
          body: JSON.stringify({ query, limit: 3 }),
        })
      ).json()) as { results?: Array<{ sourceRowId: string }> }).results?.map((r) => r.sourceRowId) ?? [];
    try {
      await eventually(async () => (await search('teapot'))[0] === idOf(1, '2024-01-10') && (await search('glass vase'))[0] === idOf(2, '2024-02-10'), 'both partitions indexed by the full sync');
      await s.sql(`UPDATE events SET at = '2024-02-11', kind = 'blue ceramic teapot, chipped' WHERE id = 1`);
      await eventually(async () => {
        const hits = await search('teapot');
        return hits.includes(idOf(1, '2024-02-11')) && !hits.includes(idOf(1, '2024-01-10'));
      }, 'the moved row under its new id, the old id gone');
    } finally {
      assert.equal(await daemon.stop(), 0);
    }
  });

  test("the worker's reader on the root: pages across partitions in key order and re-reads moved ids", async (t) => {
    const s = await database(t);
    await s.work.insert(30, [1, 2]);
    const reader = await createPostgresReader(s.db, { lens: s.lens, table: 'public.events', columns: ['kind'], changeTrackingColumn: 'updated_at' });
    try {
      const ids: string[] = [];
      for (let after: string | undefined; ; ) {
        const page = await reader.page({ after, limit: 7 });
        if (!page.length) break;
        ids.push(...page.map((r) => r.id));
        after = page[page.length - 1].id;
      }
      assert.equal(ids.length, 30);
      assert.equal(new Set(ids).size, 30);
      const before = (await s.sql(`SELECT id::text, at::text FROM events WHERE id = 1`))[0];
      assert.equal(before.at, '2024-01-02');
      await s.work.move(1, 1, 2);
      const after = (await s.sql(`SELECT id::text, at::text FROM events WHERE id = 1`))[0];
      const rows = await reader.readByIds([idOf(1, before.at), idOf(1, after.at)]);
      assert.equal(rows.has(idOf(1, before.at)), false, 'the old id is gone');
      assert.equal(rows.get(idOf(1, after.at))?.kind, 'k1');
    } finally {
      await reader.close();
    }
  });
});
