/**
 * `tributary pause|resume|ingest` through the CLI against a running daemon (a child process)
 * polling a real Postgres and delivering to a loopback SemiLayer server.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, killChildren, runCli, spawnCli, stopDaemon } from './helpers/daemon.js';

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

const lens = (name: string, extra: string) => `
  ${name}:
    source: app
    table: items
    fields: [name]
    changeTrackingColumn: updated_at
    syncOverlap: 0s
    initialSync: none
    sink: hosted
${extra}`;

/** A database with `items`, and a config file with three polled lenses on it; `state` is the YAML of the state store. */
async function setUp(dbName: string, state: (db: string) => string) {
  const db = await cluster.createDatabase(dbName);
  await cluster.query(db, `CREATE TABLE items (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
                           CREATE INDEX ON items (updated_at, id); INSERT INTO items (id, name) VALUES (1, 'one')`);
  const file = join(mkdtempSync(join(tmpdir(), 'tributary-ctl-')), 'tributary.yaml');
  writeFileSync(
    file,
    `sources:
  app: { type: postgres, url: "${db}", capture: poll }
lenses:${lens(`${dbName}_fast`, '    syncInterval: 1s\n    smartSyncInterval: 1h')}${lens(`${dbName}_other`, '    syncInterval: 1s')}${lens(`${dbName}_slow`, '    syncInterval: 1h')}
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: ${state(db)}
metrics: false
log: { level: warn }
pipeline: { drainTimeoutMs: 1500 }
`,
  );
  const sql = (text: string) => cluster.query(db, text);
  const cli = (args: string[], input?: string) => runCli([...args, '--config', file], { TRIBUTARY_CONTROL_WAIT_MS: '20000' }, input);
  const run = () => spawnCli(['run', '--config', file]);
  return { sql, cli, run, file };
}

test('pause holds a polled lens across a restart, resume releases it, ingest forces runs and queues records', async () => {
  const { sql, cli, run, file } = await setUp('ctl_embedded', () => `{ type: embedded, path: "${mkdtempSync(join(tmpdir(), 'tributary-ctl-state-'))}" }`);
  const [fast, other, slow] = ['ctl_embedded_fast', 'ctl_embedded_other', 'ctl_embedded_slow'];
  let daemon = run();
  await eventually(() => [fast, other, slow].every((l) => sink.lastAction(l).has('1')), 'row 1 polled by every lens', 30_000);

  const paused = await cli(['pause', '--lens', fast]);
  assert.equal(paused.code, 0, paused.output);
  assert.match(paused.output, new RegExp(`paused lens ${fast}`));
  await sql(`INSERT INTO items (id, name) VALUES (2, 'two')`);
  await eventually(() => sink.lastAction(other).has('2'), 'row 2 polled by the lens that is not paused');
  await sql(`INSERT INTO items (id, name) VALUES (3, 'three')`);
  await eventually(() => sink.lastAction(other).has('3'), 'row 3 polled by the lens that is not paused');
  assert.equal(sink.lastAction(fast).has('2'), false, 'the paused lens is not polled');
  await eventually(async () => /paused/.test((await cli(['status', '--lens', fast])).output), 'status shows paused');

  // The pause is kept in the state store: a new daemon starts the lens paused.
  await stopDaemon(daemon);
  daemon = run();
  await eventually(async () => {
    const { output } = await cli(['status', '--lens', fast]);
    return /paused/.test(output) && !/may not be running/.test(output);
  }, 'the restarted daemon reports the lens paused', 30_000);
  assert.equal(sink.lastAction(fast).has('2'), false);

  const resumed = await cli(['resume', '--lens', fast]);
  assert.equal(resumed.code, 0, resumed.output);
  await eventually(() => sink.lastAction(fast).has('2') && sink.lastAction(fast).has('3'), 'rows 2 and 3 polled once resumed');
  const status = await cli(['status', '--lens', fast]);
  assert.match(status.output, /smart-sync=/, 'status shows the lens sweeps');

  // ingest --mode incremental polls a polling lens now instead of in an hour.
  await sql(`INSERT INTO items (id, name) VALUES (4, 'four')`);
  const incremental = await cli(['ingest', slow, '--mode', 'incremental']);
  assert.equal(incremental.code, 0, incremental.output);
  await eventually(() => sink.lastAction(slow).has('4'), 'row 4 polled on request');

  // ingest --mode full asks the sink for a full sync.
  const full = await cli(['ingest', slow, '--mode', 'full']);
  assert.equal(full.code, 0, full.output);
  await eventually(() => sink.requests.some((r) => r.lens === slow && r.mode === 'full'), 'a full sync request reached the sink');

  // ingest --mode records queues JSON lines from stdin.
  const records = await cli(['ingest', slow, '--mode', 'records'], '{"id":"500","action":"delete"}\n{"id":"501","action":"upsert"}\n');
  assert.equal(records.code, 0, records.output);
  assert.match(records.output, /delivered 2 change/);
  await eventually(() => sink.lastAction(slow).get('500') === 'delete' && sink.lastAction(slow).get('501') === 'upsert', 'the records delivered');

  // Usage errors exit 2 and send nothing.
  for (const args of [['ingest', slow, '--mode', 'sideways'], ['pause'], ['pause', '--lens', 'nope'], ['ingest', '--mode', 'full']]) {
    const bad = await cli(args);
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.output}`);
  }
  const badLine = await cli(['ingest', slow, '--mode', 'records'], '{"id":"1","action":"upsert"}\nnot json\n');
  assert.equal(badLine.code, 2);
  assert.match(badLine.output, /stdin line 2/);

  // Without a daemon, the CLI says so after its wait, and the request expires unapplied.
  await stopDaemon(daemon);
  const alone = await runCli(['pause', '--lens', fast, '--config', file], { TRIBUTARY_CONTROL_WAIT_MS: '300' });
  assert.equal(alone.code, 1);
  assert.match(alone.output, /no running daemon took the request/);
  daemon = run();
  await eventually(async () => !/may not be running/.test((await cli(['status', '--lens', fast])).output), 'the daemon is back', 30_000);
  await sql(`INSERT INTO items (id, name) VALUES (5, 'five')`);
  await eventually(() => sink.lastAction(fast).has('5'), 'the expired pause was not applied');
  await stopDaemon(daemon);
});

test('pause and resume through the PostgreSQL state store', async () => {
  const { sql, cli, run } = await setUp('ctl_pgstate', (db) => `{ type: postgres, url: "${db}", schema: tributary_state }`);
  const daemon = run();
  await eventually(() => sink.lastAction('ctl_pgstate_fast').has('1'), 'row 1 polled', 30_000);
  const paused = await cli(['pause', '--lens', 'ctl_pgstate_fast']);
  assert.equal(paused.code, 0, paused.output);
  await eventually(async () => /paused/.test((await cli(['status', '--lens', 'ctl_pgstate_fast'])).output), 'status shows paused');
  await sql(`INSERT INTO items (id, name) VALUES (2, 'two')`);
  await eventually(() => sink.lastAction('ctl_pgstate_other').has('2'), 'row 2 polled by the other lens');
  await sql(`INSERT INTO items (id, name) VALUES (3, 'three')`);
  await eventually(() => sink.lastAction('ctl_pgstate_other').has('3'), 'row 3 polled by the other lens');
  assert.equal(sink.lastAction('ctl_pgstate_fast').has('2'), false, 'the paused lens is not polled');
  const resumed = await cli(['resume', '--lens', 'ctl_pgstate_fast']);
  assert.equal(resumed.code, 0, resumed.output);
  await eventually(() => sink.lastAction('ctl_pgstate_fast').has('2'), 'row 2 polled once resumed');
  await stopDaemon(daemon);
});

test('dlq replay and drop for a hosted sink: a batch the sink rejected is delivered again once it accepts, or forgotten', async () => {
  const { sql, cli, run, file } = await setUp('ctl_dlq', () => `{ type: embedded, path: "${mkdtempSync(join(tmpdir(), 'tributary-ctl-state-'))}" }`);
  const target = 'ctl_dlq_other';
  let answer: 'reject' | 'unavailable' | 'accept' = 'reject';
  sink.respondWith((req) => {
    if (req.lens !== target || !req.changes?.some((c) => c.id === '7')) return undefined;
    if (answer === 'reject') return { status: 400, body: { error: 'Invalid record id 7' } };
    if (answer === 'unavailable') return { status: 503, body: { error: 'try later' } };
    return undefined;
  });
  let daemon = run();
  try {
    await eventually(() => sink.lastAction(target).has('1'), 'row 1 polled', 30_000);
    await sql(`INSERT INTO items (id, name) VALUES (7, 'seven')`);
    await eventually(async () => /ids=7 .*Invalid record id 7/.test((await cli(['dlq', 'list', '--lens', target])).output), 'the rejected batch is a dead letter');
    assert.equal(sink.lastAction(target).has('7'), false);

    // A restart counts the letters it finds.
    await stopDaemon(daemon);
    daemon = run();
    await eventually(async () => new RegExp(`^${target}\\s.*dlq=1$`, 'm').test((await cli(['status', '--lens', target])).output), 'status counts the stored letter after a restart', 30_000);

    // A replay the daemon cannot finish before it stops keeps its letter, and says so.
    answer = 'unavailable';
    const replaying = spawnCli(['dlq', 'replay', '--lens', target, '--config', file], { TRIBUTARY_CONTROL_WAIT_MS: '20000' });
    await eventually(() => sink.requests.some((r) => r.lens === target && r.status === 503), 'the replay reaches the unavailable sink');
    await stopDaemon(daemon);
    assert.equal(await replaying.exited, 1, replaying.output());
    assert.match(replaying.output(), /stopped before the replayed changes were delivered/);
    assert.match((await cli(['dlq', 'list', '--lens', target])).output, /ids=7/, 'the letter is kept');

    daemon = run();
    answer = 'accept';
    const replayed = await cli(['dlq', 'replay', '--lens', target]);
    assert.equal(replayed.code, 0, replayed.output);
    assert.match(replayed.output, /delivered 1 dead letter\(s\) of lens ctl_dlq_other again/);
    assert.equal(sink.lastAction(target).get('7'), 'upsert', 'delivered before the CLI said so');
    assert.match((await cli(['dlq', 'list', '--lens', target])).output, /empty/, 'the replayed letter removed');

    answer = 'reject';
    await sql(`UPDATE items SET name = 'seven again', updated_at = now() WHERE id = 7`);
    await eventually(async () => /ids=7/.test((await cli(['dlq', 'list', '--lens', target])).output), 'rejected again');
    const dropped = await cli(['dlq', 'drop', '--lens', target]);
    assert.equal(dropped.code, 0, dropped.output);
    assert.match((await cli(['dlq', 'list', '--lens', target])).output, /empty/, 'the dropped letter removed');
  } finally {
    sink.respondWith(undefined);
    await stopDaemon(daemon);
  }
});
