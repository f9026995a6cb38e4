/**
 * `replicas: 2`: two daemons share one postgres state store; exactly one reads each source, the
 * other stands by and takes over when the active one dies (kill -9), losing nothing.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPostgres, freePort, databaseName, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, killChildren, runCli, spawnDaemon, type ChildDaemon } from './helpers/daemon.js';
import { PostgresStateStore } from '../src/state/postgres.js';
import type { Lease } from '../src/types.js';

let pg: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [pg, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  killChildren();
  await sink?.close();
  await pg?.stop();
});

/** `tributary_source_active{source="app"}` of a daemon's /metrics, or undefined when it does not answer. */
async function active(port: number): Promise<number | undefined> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
  if (!res?.ok) return undefined;
  const m = /^tributary_source_active\{source="app"\} (\d)$/m.exec(await res.text());
  return m ? Number(m[1]) : undefined;
}

/** A daemon's config: logical capture of `items` in `db` to the loopback sink, state in `db`'s `schema`. */
function itemsConfig(db: string, name: string, port: number, schema: string, drainTimeoutMs: number): string {
  return `sources:
  app: { type: postgres, url: "${db}", capture: logical, slot: ${name}, publication: ${name} }
lenses:
  items: { source: app, table: items, sink: hosted, initialSync: none, maxWaitMs: 10 }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: postgres, url: "${db}", schema: ${schema} }
metrics: { listen: "127.0.0.1:${port}" }
pipeline: { drainTimeoutMs: ${drainTimeoutMs} }
`;
}

describe('replicas: 2', () => {
  test('one replica reads, the other stands by and takes over after kill -9 with nothing lost', async (t) => {
    const name = databaseName(t.name);
    const db = await pg.createDatabase(name);
    await pg.query(db, `CREATE TABLE items (id int PRIMARY KEY, note text)`);
    const ports = [await freePort(), await freePort()];
    const yaml = (port: number) => itemsConfig(db, name, port, 'tributary_state', 2000);
    const daemons: ChildDaemon[] = [spawnDaemon(yaml(ports[0]))];
    await eventually(async () => (await active(ports[0])) === 1, 'the first replica reads the source', 20_000);
    daemons.push(spawnDaemon(yaml(ports[1])));
    await eventually(async () => (await active(ports[1])) === 0, 'the second replica stands by', 20_000);
    assert.equal((await fetch(`http://127.0.0.1:${ports[1]}/readyz`)).status, 200, 'a standby is ready (it serves, and takes over)');

    // status shows both replicas: one streaming, one standing by.
    const configFile = daemons[1].child.spawnargs.at(-1)!;
    await eventually(async () => {
      const { output } = await runCli(['status', '--config', configFile]);
      return /^items\s+streaming\s.*replica=\S+:\d+$/m.test(output) && /^items\s+standby\s.*replica=\S+:\d+$/m.test(output);
    }, 'status lists the active replica and the standby', 10_000);

    // Writes keep coming while the active replica is killed.
    let next = 1;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        await pg.query(db, `INSERT INTO items VALUES ($1, 'n')`, [next]);
        next++;
        await sleep(20);
      }
    })();
    await eventually(() => sink.lastAction('items').size >= 20, 'changes flowing through the first replica');
    daemons[0].child.kill('SIGKILL');
    await daemons[0].exited;
    await eventually(async () => (await active(ports[1])) === 1, 'the standby takes over', 15_000);
    const takenOverAt = next;
    await eventually(() => next > takenOverAt + 20, 'more writes after the takeover');
    writing = false;
    await writer;

    const written = next - 1;
    await eventually(() => sink.lastAction('items').size === written, `all ${written} committed rows delivered`, 20_000);
    for (let id = 1; id <= written; id++) assert.equal(sink.lastAction('items').get(String(id)), 'upsert', `row ${id}`);

    daemons[1].child.kill('SIGTERM');
    assert.equal(await daemons[1].exited, 0, daemons[1].output());
  });

  test('operator requests: a standby leaves them to the replica that reads the lens, and the CLI reports only what took effect', async (t) => {
    const name = databaseName(t.name);
    const db = await pg.createDatabase(name);
    await pg.query(db, `CREATE TABLE items (id int PRIMARY KEY)`);
    const port = await freePort();
    // Another replica (this test) holds the source's lease: the daemon stands by.
    const holder = await PostgresStateStore.open({ url: db, schema: 'tributary_state' });
    const lease = await holder.lease('source/app');
    const daemon = spawnDaemon(itemsConfig(db, name, port, 'tributary_state', 1000));
    const configFile = daemon.child.spawnargs.at(-1)!;
    try {
      await eventually(async () => (await active(port)) === 0, 'the daemon stands by', 20_000);
      const early = await runCli(['pause', '--config', configFile, '--lens', 'items'], { TRIBUTARY_CONTROL_WAIT_MS: '2500' });
      assert.equal(early.code, 1, early.output);
      assert.match(early.output, /no running daemon took the request/);

      await lease.release();
      await eventually(async () => (await active(port)) === 1, 'the daemon takes over', 20_000);
      const paused = await runCli(['pause', '--config', configFile, '--lens', 'items']);
      assert.equal(paused.code, 0, paused.output);
      assert.match(paused.output, /^paused lens items$/m);
      await eventually(async () => /^items\s+paused\s/m.test((await runCli(['status', '--config', configFile])).output), 'status shows the pause');
    } finally {
      await holder.close();
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
  });

  test('the postgres lease: never held twice; freed when its holder closes', async (t) => {
    const db = await pg.createDatabase(databaseName(t.name));
    const stores = await Promise.all([0, 1, 2].map(() => PostgresStateStore.open({ url: db })));
    try {
      let holders = 0;
      let maxHolders = 0;
      const waiting = new Set<number>();
      const stop = new AbortController();
      // Three processes' stores compete; each holder keeps the lease briefly, then hands it on
      // by closing its store (as a dying process's session ends).
      const rounds = stores.map(async (store, i) => {
        let lease: Lease;
        try {
          lease = await store.lease('source/app', { signal: stop.signal, waiting: () => waiting.add(i) });
        } catch {
          return false;
        }
        holders++;
        maxHolders = Math.max(maxHolders, holders);
        await sleep(300);
        holders--;
        void lease;
        await store.close();
        return true;
      });
      const held = await Promise.all(rounds);
      stop.abort();
      assert.deepEqual(held, [true, true, true], 'every store got the lease in turn');
      assert.equal(maxHolders, 1, 'never two holders at once');
      assert.equal(waiting.size, 2, 'two of them waited');
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('a lease whose session the server ends is reported lost', async (t) => {
    const db = await pg.createDatabase(databaseName(t.name));
    const store = await PostgresStateStore.open({ url: db });
    try {
      const lease = await store.lease('source/app');
      await pg.query(db, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tributary:lease'`);
      const err = await lease.lost;
      assert.match(err.message, /Lost the lease source\/app: the state store session at .* ended/);
      const again = await store.lease('source/app');
      await again.release();
    } finally {
      await store.close();
    }
  });

  test('a daemon whose lease session is ended exits 1 rather than read beside a new holder', async (t) => {
    const name = databaseName(t.name);
    const db = await pg.createDatabase(name);
    await pg.query(db, `CREATE TABLE items (id int PRIMARY KEY)`);
    const port = await freePort();
    const daemon = spawnDaemon(itemsConfig(db, name, port, 'tributary', 1000));
    await eventually(async () => (await active(port)) === 1, 'the daemon reads the source', 20_000);
    await pg.query(db, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tributary:lease'`);
    assert.equal(await daemon.exited, 1, daemon.output());
    assert.match(daemon.output(), /Lost the lease source\/app/);
  });
});
