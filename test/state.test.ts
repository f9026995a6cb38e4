/**
 * One contract, two stores: every StateStore test runs against the embedded store (a temp
 * directory per test) and the PostgreSQL store (a throwaway cluster, a database per test).
 * Store-specific behaviour (locking, crash safety, schema quoting) follows.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StateConfig } from '../src/config/types.js';
import { TributaryError } from '../src/errors.js';
import { openStateStore } from '../src/state/index.js';
import type { DeadLetter, StateStore } from '../src/types.js';
import { databaseName, freePort, startPostgres, type TestPostgres } from './helpers/postgres.js';

/** Gives each test a fresh, empty place for state. */
type Fixture = (t: TestContext) => Promise<StateConfig>;

function letter(lens: string, n: number): Omit<DeadLetter, 'id'> {
  const at = new Date(Date.UTC(2024, 0, 1, 0, 0, n)).toISOString();
  return {
    lens,
    reason: 'rejected',
    error: `400 bad record ${n}`,
    attempts: n,
    firstSeen: at,
    lastSeen: at,
    provenance: { source: 'app', position: `0/${n}`, changes: [{ id: String(n), action: 'upsert' }], response: '{"error":"bad"}' },
  };
}

/** Opens a store and closes it when the test ends, however it ends. */
async function open(t: TestContext, config: StateConfig, readOnly = false): Promise<StateStore> {
  const store = await openStateStore(config, { readOnly });
  t.after(() => store.close());
  return store;
}

function contract(fixture: Fixture): void {
  test('get of a missing key is undefined', async (t) => {
    const store = await open(t, await fixture(t));
    assert.equal(await store.get('position/app'), undefined);
  });

  test('put/get round-trips nested JSON', async (t) => {
    const store = await open(t, await fixture(t));
    const value = {
      lsn: '0/16B3748',
      lenses: { products: { state: 'streaming', pending: 2, ratio: 0.5 } },
      list: [1, 'two', null, true, { deep: [[]] }],
      text: 'quote " backslash \\ unicode é ✓',
    };
    await store.put('status', value);
    assert.deepEqual(await store.get('status'), value);
    await store.put('flag', false);
    await store.put('count', 0);
    await store.put('name', 'x');
    assert.equal(await store.get('flag'), false);
    assert.equal(await store.get('count'), 0);
    assert.equal(await store.get('name'), 'x');
  });

  test('put overwrites', async (t) => {
    const store = await open(t, await fixture(t));
    await store.put('position/app', '0/1');
    await store.put('position/app', '0/2');
    assert.equal(await store.get('position/app'), '0/2');
  });

  test('patch merges fields into the stored object (creating it), leaving the others', async (t) => {
    const store = await open(t, await fixture(t));
    await store.patch('lens/products', { fullSync: 'pending', reason: 'initial sync' });
    await store.patch('lens/products', { paused: true });
    await store.patch('lens/products', { fullSync: 'done', reason: null });
    assert.deepEqual(await store.get('lens/products'), { fullSync: 'done', reason: null, paused: true });
  });

  test('a value read back is a copy', async (t) => {
    const store = await open(t, await fixture(t));
    await store.put('lens/products', { paused: false });
    const read = (await store.get<{ paused: boolean }>('lens/products'))!;
    read.paused = true;
    assert.deepEqual(await store.get('lens/products'), { paused: false });
  });

  test('values survive close and reopen', async (t) => {
    const config = await fixture(t);
    const first = await openStateStore(config);
    await first.put('position/app', '0/16B3748');
    await first.put('lens/products', { paused: true });
    await first.close();
    const second = await open(t, config);
    assert.equal(await second.get('position/app'), '0/16B3748');
    assert.deepEqual(await second.get('lens/products'), { paused: true });
  });

  test('concurrent puts are all durable when they resolve', async (t) => {
    const config = await fixture(t);
    const first = await openStateStore(config);
    await Promise.all(Array.from({ length: 50 }, (_, i) => first.put(`k${i % 10}`, i)));
    await first.close();
    const second = await open(t, config);
    for (let k = 0; k < 10; k++) assert.equal(await second.get(`k${k}`), 40 + k);
  });

  test('dead letters: add, list in insertion order, filter by lens, remove', async (t) => {
    const store = await open(t, await fixture(t));
    assert.deepEqual(await store.listDeadLetters(), []);
    const added: DeadLetter[] = [];
    for (let n = 1; n <= 5; n++) added.push(await store.addDeadLetter(letter(n % 2 ? 'products' : 'orders', n)));
    assert.equal(new Set(added.map((l) => l.id)).size, 5, 'ids are unique');
    assert.deepEqual(added[0], { id: added[0].id, ...letter('products', 1) });

    assert.deepEqual(await store.listDeadLetters(), added);
    assert.deepEqual(
      (await store.listDeadLetters('products')).map((l) => l.attempts),
      [1, 3, 5],
    );
    assert.deepEqual(await store.listDeadLetters('orders'), [added[1], added[3]]);
    assert.deepEqual(await store.listDeadLetters('nothing'), []);
    assert.deepEqual(await store.countDeadLetters(['products', 'orders', 'nothing']), new Map([['products', 3], ['orders', 2], ['nothing', 0]]));

    assert.equal(await store.removeDeadLetters([added[0].id, added[3].id, 'no-such-id']), 2);
    assert.equal(await store.removeDeadLetters([added[0].id]), 0);
    assert.equal(await store.removeDeadLetters([]), 0);
    assert.deepEqual(await store.listDeadLetters(), [added[1], added[2], added[4]]);

    // Adding after a removal keeps the order and never reuses an id.
    const later = await store.addDeadLetter(letter('products', 6));
    assert.ok(!added.some((l) => l.id === later.id));
    assert.deepEqual((await store.listDeadLetters()).map((l) => l.attempts), [2, 3, 5, 6]);
  });

  test('dead letters survive close and reopen', async (t) => {
    const config = await fixture(t);
    const first = await openStateStore(config);
    const a = await first.addDeadLetter(letter('products', 1));
    const b = await first.addDeadLetter(letter('products', 2));
    const c = await first.addDeadLetter(letter('orders', 3));
    assert.equal(await first.removeDeadLetters([b.id]), 1);
    await first.close();

    const second = await open(t, config);
    assert.deepEqual(await second.listDeadLetters(), [a, c]);
    const d = await second.addDeadLetter(letter('products', 4));
    assert.ok(![a, b, c].some((l) => l.id === d.id), 'ids stay unique across restarts');
    assert.deepEqual((await second.listDeadLetters('products')).map((l) => l.id), [a.id, d.id]);
  });

  test('snapshots: a version replaces the committed one only on commit; abort and remove drop them', async (t) => {
    const store = await open(t, await fixture(t));
    assert.equal(await store.snapshots.read('sweep-p', 3), undefined, 'no snapshot yet');
    const first = await store.snapshots.write('sweep-p');
    await first.append(3, [['1', 'a'], ['2', 'b']]);
    await first.append(3, [['3', 'c']]);
    assert.deepEqual(await first.read(3), [['1', 'a'], ['2', 'b'], ['3', 'c']]);
    assert.equal(await store.snapshots.read('sweep-p', 3), undefined, 'not visible before commit');
    await first.commit();
    assert.deepEqual(await store.snapshots.read('sweep-p', 3), [['1', 'a'], ['2', 'b'], ['3', 'c']]);
    assert.deepEqual(await store.snapshots.read('sweep-p', 4), [], 'an empty bucket of a committed snapshot');

    const second = await store.snapshots.write('sweep-p');
    await second.append(3, [['9', 'z']]);
    await second.abort();
    assert.deepEqual(await store.snapshots.read('sweep-p', 3), [['1', 'a'], ['2', 'b'], ['3', 'c']], 'an aborted version changes nothing');
    const third = await store.snapshots.write('sweep-p');
    await third.append(0, [['4', 'd']]);
    await third.commit();
    assert.deepEqual(await store.snapshots.read('sweep-p', 3), [], 'the new version replaced the old one whole');
    assert.deepEqual(await store.snapshots.read('sweep-p', 0), [['4', 'd']]);
    await store.snapshots.remove('sweep-p');
    assert.equal(await store.snapshots.read('sweep-p', 0), undefined);
  });

  test('requests: sent by a read-only store, taken once, oldest first, only for the lenses the taker reads', async (t) => {
    const config = await fixture(t);
    const daemon = await open(t, config);
    const cli = await open(t, config, true);
    const a = await cli.sendRequest({ kind: 'pause', lens: 'products' });
    const other = await cli.sendRequest({ kind: 'pause', lens: 'orders' });
    const b = await cli.sendRequest({ kind: 'ingest', lens: 'products', mode: 'records', changes: [{ id: '7', action: 'delete' }] });
    const expiresAt = Date.now() - 1;
    const expired = await cli.sendRequest({ kind: 'resume', lens: 'orders', expiresAt });
    assert.equal(await cli.requestPending(a), true);
    assert.deepEqual(await daemon.takeRequests(['products']), [
      { id: a, request: { kind: 'pause', lens: 'products' } },
      { id: b, request: { kind: 'ingest', lens: 'products', mode: 'records', changes: [{ id: '7', action: 'delete' }] } },
      { id: expired, request: { kind: 'resume', lens: 'orders', expiresAt } },
    ]);
    assert.equal(await cli.requestPending(a), false);
    assert.equal(await cli.requestPending(b), false);
    assert.equal(await cli.requestPending(other), true, 'the request of a lens the taker does not read stays for the replica that reads it');
    assert.equal(await cli.requestPending(expired), false, 'expired requests are taken (and dropped) by anyone');
    assert.deepEqual(await daemon.takeRequests(['products']), [], 'each request is taken once');
    assert.deepEqual((await daemon.takeRequests(['orders'])).map((r) => r.id), [other]);
  });

  test('a read-only open works beside a writer and sees its latest writes', async (t) => {
    const config = await fixture(t);
    const writer = await open(t, config);
    const reader = await open(t, config, true);
    assert.equal(await reader.get('position/app'), undefined);
    assert.deepEqual(await reader.listDeadLetters(), []);

    await writer.put('position/app', '0/1');
    assert.equal(await reader.get('position/app'), '0/1');
    await writer.put('position/app', '0/2');
    assert.equal(await reader.get('position/app'), '0/2');
    const dl = await writer.addDeadLetter(letter('products', 1));
    assert.deepEqual(await reader.listDeadLetters('products'), [dl]);

    await assert.rejects(reader.put('position/app', '0/3'), /read-only/);
    await assert.rejects(reader.addDeadLetter(letter('products', 2)), /read-only/);
    await assert.rejects(reader.removeDeadLetters([dl.id]), /read-only/);
    assert.equal(await writer.get('position/app'), '0/2');
  });

  test('a value that is not JSON is refused', async (t) => {
    const store = await open(t, await fixture(t));
    await assert.rejects(store.put('k', undefined), TypeError);
  });
}

describe('embedded state store', () => {
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  function tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-state-'));
    dirs.push(dir);
    return dir;
  }
  /** A directory that does not exist yet: the store creates it. */
  const fixture: Fixture = async () => ({ type: 'embedded', path: join(tempDir(), 'data') });

  contract(fixture);

  /** A pid that belonged to a process that has exited. */
  function deadPid(): number {
    const child = spawnSync(process.execPath, ['-e', '']);
    assert.ok(child.pid);
    return child.pid;
  }

  test('a second writable open of the same directory fails while the first is open', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    const first = await openStateStore(config);
    const err: unknown = await openStateStore(config).then(
      () => assert.fail('second open succeeded'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TributaryError);
    assert.match(err.message, new RegExp(`${config.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.match(err.message, new RegExp(`pid ${process.pid}`));
    assert.match(err.message, /state\.path/);
    assert.equal(err.retriable, false);
    await first.close();
    // Closing releases the lock.
    const again = await openStateStore(config);
    await again.close();
    assert.ok(!readdirSync(config.path).includes('tributary.lock'), 'close removes the lock file');
  });

  test('a lock held by another live process names it', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    mkdirSync(config.path, { recursive: true });
    // pid 1 is always alive (init, or this container's entrypoint) and is not this process.
    assert.notEqual(process.pid, 1);
    writeFileSync(join(config.path, 'tributary.lock'), '1\n');
    await assert.rejects(openStateStore(config), (err: Error) => {
      assert.ok(err instanceof TributaryError);
      assert.match(err.message, /locked by pid 1\b/);
      assert.match(err.message, /tributary\.lock/);
      return true;
    });
    assert.equal(readFileSync(join(config.path, 'tributary.lock'), 'utf8'), '1\n', 'a live lock is left alone');
  });

  test('a stale lock (its process is gone) is taken over', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    const seed = await openStateStore(config);
    await seed.put('position/app', '0/9');
    await seed.close();
    writeFileSync(join(config.path, 'tributary.lock'), `${deadPid()}\n`);
    const store = await open(t, config);
    assert.equal(await store.get('position/app'), '0/9');
    assert.equal(readFileSync(join(config.path, 'tributary.lock'), 'utf8').trim(), String(process.pid));
  });

  test('a lock with our own pid that this process does not hold is stale (container restart)', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    const seed = await openStateStore(config);
    await seed.close();
    writeFileSync(join(config.path, 'tributary.lock'), `${process.pid}\n`);
    const store = await open(t, config);
    await store.put('k', 1);
    assert.equal(await store.get('k'), 1);
  });

  test('a read-only open takes no lock and creates nothing', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    const reader = await open(t, config, true);
    assert.equal(await reader.get('k'), undefined);
    assert.deepEqual(await reader.listDeadLetters(), []);
    const writer = await open(t, config);
    await writer.put('k', 'v');
    assert.equal(await reader.get('k'), 'v');
  });

  test('state.json is written whole, as a JSON object of the values', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    const store = await open(t, config);
    await store.put('position/app', '0/1');
    await store.put('lens/products', { paused: false });
    const onDisk = JSON.parse(readFileSync(join(config.path, 'state.json'), 'utf8'));
    assert.deepEqual(onDisk, { 'position/app': '0/1', 'lens/products': { paused: false } });
    assert.deepEqual(
      readdirSync(config.path).sort(),
      ['requests', 'state.json', 'tributary.lock'],
      'no temp file is left behind',
    );
  });

  test('crash safety: a leftover temp file from an interrupted write does not corrupt state', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    const seed = await openStateStore(config);
    await seed.put('position/app', '0/1');
    await seed.put('position/app', '0/2');
    await seed.close();
    const complete = readFileSync(join(config.path, 'state.json'), 'utf8');
    // A crash mid-write leaves a truncated temp file, and the lock of the dead process.
    writeFileSync(join(config.path, 'state.json.tmp'), '{\n  "position/app": "0/3",\n  "lens/pro');
    writeFileSync(join(config.path, 'tributary.lock'), `${deadPid()}\n`);

    const reader = await open(t, config, true);
    assert.equal(await reader.get('position/app'), '0/2', 'a reader sees the last complete version');
    const store = await open(t, config);
    assert.equal(await store.get('position/app'), '0/2');
    assert.equal(readFileSync(join(config.path, 'state.json'), 'utf8'), complete);
    assert.ok(!readdirSync(config.path).includes('state.json.tmp'), 'the leftover is cleaned up');
    await store.put('position/app', '0/4');
    assert.equal(JSON.parse(readFileSync(join(config.path, 'state.json'), 'utf8'))['position/app'], '0/4');
  });

  test('crash safety: a torn last dead-letter line is dropped, earlier ones kept', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    const seed = await openStateStore(config);
    const kept = await seed.addDeadLetter(letter('products', 1));
    await seed.close();
    appendFileSync(join(config.path, 'dead-letters.jsonl'), '{"id":"dl_9999999999999_000000","lens":"prod');

    const reader = await open(t, config, true);
    assert.deepEqual(await reader.listDeadLetters(), [kept]);
    const store = await open(t, config);
    assert.deepEqual(await store.listDeadLetters(), [kept]);
    const next = await store.addDeadLetter(letter('products', 2));
    assert.deepEqual(await store.listDeadLetters(), [kept, next]);
    assert.deepEqual(await reader.listDeadLetters(), [kept, next]);
  });

  test('a state.json damaged outside Tributary is reported, not overwritten', async (t) => {
    const config = (await fixture(t)) as { type: 'embedded'; path: string };
    mkdirSync(config.path, { recursive: true });
    writeFileSync(join(config.path, 'state.json'), '{ not json');
    await assert.rejects(openStateStore(config), /state\.json is not valid JSON/);
    assert.equal(readFileSync(join(config.path, 'state.json'), 'utf8'), '{ not json');
    // The failed open released its lock.
    assert.ok(!readdirSync(config.path).includes('tributary.lock'));
  });
});

describe('postgres state store', () => {
  let server: TestPostgres;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await server?.stop();
  });
  /** A database of its own for every test. */
  const fixture: Fixture = async (t) => ({
    type: 'postgres',
    url: await server.createDatabase(databaseName(t.name)),
    schema: 'tributary',
  });

  contract(fixture);

  test('two processes patching different fields of one key keep both (replicas sharing a lens)', async (t) => {
    const config = await fixture(t);
    const [a, b] = [await open(t, config), await open(t, config)];
    await a.put('lens/products', { fullSync: 'skipped' });
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a.patch('lens/products', { fullSync: i % 4 === 1 ? 'pending' : 'done' }) : b.patch('lens/products', { paused: i % 4 === 0 }))));
    await b.patch('lens/products', { paused: true });
    assert.deepEqual(await b.get('lens/products'), { fullSync: 'done', paused: true });
  });

  test('creates its tables in the configured schema, whatever its name', async (t) => {
    const config = { ...((await fixture(t)) as { type: 'postgres'; url: string }), schema: 'odd "name"; drop' };
    const store = await open(t, config);
    await store.put('k', { v: 1 });
    await store.addDeadLetter(letter('products', 1));
    const rows = await server.query(
      config.url,
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`,
      [config.schema],
    );
    assert.deepEqual(rows.map((r) => r.table_name), ['dead_letters', 'kv', 'requests', 'snapshot_chunks']);
    const kv = await server.query(config.url, `SELECT key, value FROM "odd ""name""; drop".kv`);
    assert.deepEqual(kv, [{ key: 'k', value: { v: 1 } }]);
    // Opening again with tables in place is fine.
    const again = await open(t, config);
    assert.deepEqual(await again.get('k'), { v: 1 });
  });

  test('a read-only open of a schema nobody created yet sees empty state', async (t) => {
    const config = await fixture(t);
    const reader = await open(t, config, true);
    assert.equal(await reader.get('k'), undefined);
    assert.deepEqual(await reader.listDeadLetters(), []);
    const schemas = await server.query((config as { url: string }).url, `SELECT 1 FROM pg_namespace WHERE nspname = 'tributary'`);
    assert.equal(schemas.length, 0, 'a read-only open creates nothing');
  });

  test('an unreachable database fails with a retriable error that hides the password', async () => {
    const url = `postgres://postgres:hunter2@127.0.0.1:${await freePort()}/nowhere`;
    await assert.rejects(openStateStore({ type: 'postgres', url, schema: 'tributary' }), (err: Error) => {
      assert.ok(err instanceof TributaryError);
      assert.equal(err.retriable, true);
      assert.doesNotMatch(err.message, /hunter2/);
      assert.match(err.message, /postgres:\*\*\*@127\.0\.0\.1/);
      return true;
    });
  });
});
