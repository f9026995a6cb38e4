/**
 * The sink contract: what every sink that talks to a remote API must do inside the pipeline,
 * tested through a real daemon (logical capture of a throwaway Postgres) against a loopback
 * server speaking the sink's API. A new sink adds a `SinkHarness` for its loopback server
 * and runs `sinkContract(harness)` (see test/sink-contract.test.ts).
 *
 * 1. accepts: inserts, updates and deletes arrive with their last action.
 *
 * Deletes follow upserts the sink has accepted: a payload sink without a delete (psykhe) can
 * only deactivate what it was sent.
 * 2. a 429 with Retry-After holds the batch at least that long, then delivers it.
 * 3. a storm of 5xx answers is retried without losing or reordering anything.
 * 4. a 4xx that rejects a batch dead-letters it and the stream goes on.
 * 5. an authentication failure holds the lens in `error` (no dead letters) until it passes.
 * 6. a lens still in error at stop: the drain gives up in time and nothing is lost.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { LensConfig, SinkConfig } from '../../src/config/types.js';
import type { Action } from '../../src/types.js';
import { eventually, startTestDaemon, testConfig } from './daemon.js';
import { databaseName, type TestPostgres } from './postgres.js';

/** One answer the loopback server gives instead of accepting. */
export interface Refusal {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export interface SinkHarness {
  /** The sink's type, for test names. */
  type: string;
  /** The sink's config, pointing at the loopback server, for the scenario's lens. */
  config(lens: string): SinkConfig;
  /** Lens settings the sink needs (a payload sink's `payload`). */
  lens?: Partial<LensConfig>;
  /** Refuse requests for which `fn` returns a Refusal (ids: the ids the request carries). */
  refuse(fn: ((lens: string, ids: string[]) => Refusal | undefined) | undefined): void;
  /** The last action of each id the server accepted for a lens. */
  accepted(lens: string): Map<string, Action>;
  /** Every request for a lens that the server answered, in order. */
  answered(lens: string): Array<{ status: number; at: number }>;
  /** How a rejected batch's answer reads in its dead letter (e.g. the server's error text). */
  rejection: Refusal;
  /** The answer to a key the server does not know. */
  authFailure: Refusal;
}

export function sinkContract(harness: SinkHarness, cluster: () => TestPostgres): void {
  /** A database with table `items`, and a daemon delivering its changes to the sink. */
  async function scenario(t: { name: string }) {
    const name = databaseName(`${harness.type} ${t.name}`);
    const db = await cluster().createDatabase(name);
    await cluster().query(db, `CREATE TABLE items (id int PRIMARY KEY, note text)`);
    const config = testConfig({ dbUrl: db, sinkUrl: 'http://127.0.0.1:9', slot: name, lenses: { [name]: { table: 'items', initialSync: 'none', ...harness.lens } } });
    config.sinks.hosted = harness.config(name);
    const daemon = await startTestDaemon(config);
    const sql = (text: string) => cluster().query(db, text);
    const status = () => daemon.status().lenses[0];
    return { lens: name, daemon, sql, status, config };
  }

  describe(`sink contract: ${harness.type}`, () => {
    test('accepts inserts, updates and deletes with their last action', async (t) => {
      const { lens, daemon, sql } = await scenario(t);
      await sql(`INSERT INTO items SELECT g, 'n' FROM generate_series(1, 50) g`);
      await eventually(() => harness.accepted(lens).size === 50, 'every id delivered');
      await sql(`UPDATE items SET note = 'u' WHERE id <= 10`);
      await sql(`DELETE FROM items WHERE id > 45`);
      await eventually(() => [46, 47, 48, 49, 50].every((id) => harness.accepted(lens).get(String(id)) === 'delete'), 'the deletes delivered');
      for (let id = 1; id <= 50; id++) assert.equal(harness.accepted(lens).get(String(id)), id > 45 ? 'delete' : 'upsert', `id ${id}`);
      assert.equal(await daemon.stop(), 0);
    });

    test('a 429 with Retry-After holds the batch that long, then delivers it', async (t) => {
      const { lens, daemon, sql, status } = await scenario(t);
      let refused = 0;
      harness.refuse((l) => (l === lens && refused++ === 0 ? { status: 429, headers: { 'retry-after': '2' }, body: { error: 'slow down' } } : undefined));
      await sql(`INSERT INTO items VALUES (1, 'a')`);
      await eventually(() => status().state === 'retrying', 'the lens retries');
      await eventually(() => harness.accepted(lens).get('1') === 'upsert', 'delivered after the wait');
      const [first, second] = harness.answered(lens);
      assert.equal(first.status, 429);
      assert.ok(second.at - first.at >= 1900, `waited ${second.at - first.at} ms for a Retry-After of 2 s`);
      harness.refuse(undefined);
      assert.equal(await daemon.stop(), 0);
    });

    test('a storm of 5xx answers is retried; nothing is lost or reordered', async (t) => {
      const { lens, daemon, sql } = await scenario(t);
      let storm = 6; // backoff doubles from 200 ms: at most 12.6 s of waiting in all
      harness.refuse((l) => (l === lens && storm-- > 0 ? { status: 503, body: { error: 'unavailable' } } : undefined));
      for (let i = 1; i <= 5; i++) await sql(`INSERT INTO items VALUES (${i}, 'a'); UPDATE items SET note = 'b' WHERE id = ${i}`);
      await eventually(() => harness.accepted(lens).size === 5, 'every id delivered after the storm', 30_000);
      await sql(`DELETE FROM items WHERE id = 3`);
      await eventually(() => harness.accepted(lens).get('3') === 'delete', 'the delete delivered', 30_000);
      assert.deepEqual([...harness.accepted(lens)].sort(), [['1', 'upsert'], ['2', 'upsert'], ['3', 'delete'], ['4', 'upsert'], ['5', 'upsert']]);
      assert.ok(harness.answered(lens).filter((a) => a.status === 503).length === 6);
      harness.refuse(undefined);
      assert.equal(await daemon.stop(), 0);
    });

    test('a batch the API rejects is dead-lettered and the stream goes on', async (t) => {
      const { lens, daemon, sql, status } = await scenario(t);
      harness.refuse((l, ids) => (l === lens && ids.includes('7') ? harness.rejection : undefined));
      await sql(`INSERT INTO items VALUES (7, 'bad')`);
      await eventually(() => status().dlq === 1, 'a dead letter');
      await sql(`INSERT INTO items VALUES (8, 'good')`);
      await eventually(() => harness.accepted(lens).get('8') === 'upsert', 'the next change flows');
      assert.equal(harness.accepted(lens).has('7'), false);
      harness.refuse(undefined);
      assert.equal(await daemon.stop(), 0);
    });

    test('an authentication failure holds the lens in error, with no dead letters, until it passes', async (t) => {
      const { lens, daemon, sql, status } = await scenario(t);
      let failing = true;
      harness.refuse((l) => (l === lens && failing ? harness.authFailure : undefined));
      await sql(`INSERT INTO items VALUES (1, 'a')`);
      await eventually(() => status().state === 'error' && /key/i.test(status().lastError ?? ''), 'the lens in error, naming the key');
      assert.equal(status().dlq, 0);
      await sql(`INSERT INTO items VALUES (2, 'b')`);
      failing = false;
      await eventually(() => harness.accepted(lens).size === 2, 'everything delivered once the key works');
      await eventually(() => status().state === 'streaming', 'streaming again');
      harness.refuse(undefined);
      assert.equal(await daemon.stop(), 0);
    });

    test('a lens still in error at stop: the drain gives up in time and the batch is delivered after a restart', async (t) => {
      const { lens, daemon, sql, status, config } = await scenario(t);
      harness.refuse((l) => (l === lens ? harness.authFailure : undefined));
      await sql(`INSERT INTO items VALUES (1, 'a')`);
      await eventually(() => status().state === 'error', 'the lens in error');
      const stopping = Date.now();
      assert.equal(await daemon.stop(), 1, 'one change left undelivered');
      assert.ok(Date.now() - stopping < config.pipeline.drainTimeoutMs + 6000, 'the stop is bounded by the drain timeout');
      harness.refuse(undefined);
      const again = await startTestDaemon(config);
      await eventually(() => harness.accepted(lens).get('1') === 'upsert', 'the change replays after the restart');
      assert.equal(await again.stop(), 0);
    });
  });
}
