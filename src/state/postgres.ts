/**
 * The PostgreSQL state store: two tables in their own schema (default `tributary`).
 *
 *   kv(key text primary key, value jsonb not null, updated_at timestamptz not null default now())
 *   dead_letters(id bigserial primary key, lens, reason, error, attempts, first_seen, last_seen, provenance jsonb)
 *   snapshot_chunks(name, committed, bucket, seq bigserial, entries text): sweep snapshots, a chunk
 *     of `["id","hash"]` lines a row; bucket -1 marks a committed snapshot
 *   requests(id bigserial primary key, body jsonb): operator requests from the CLI
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { TributaryError } from '../errors.js';
import { redactUrl } from '../log.js';
import { connectionRefusal, isRetriablePgError, pgConnection } from '../postgres.js';

/** How often a waiting lease tries again; a session holding leases is checked twice as rarely. */
const LEASE_RETRY_MS = 1000;

/** The dedicated connection whose advisory locks are the leases this process holds. */
interface LeaseSession {
  client: pg.Client;
  /** The `lost` callbacks of the leases held on it. */
  held: Set<(err: Error) => void>;
  ended: boolean;
}
import type { ControlRequest, DeadLetter, Lease, SnapshotEntry, SnapshotStore, SnapshotWriter, StateStore } from '../types.js';


/**
 * State in PostgreSQL (`state: { type: postgres, url, schema }`), for deployments where the
 * daemon's disk is not durable (Kubernetes without volumes). The schema and tables are created
 * if missing, except by a read-only store, which sees a missing schema as empty state and
 * refuses writes. Several readers may share the schema; run one daemon (one writer) per schema.
 * Database failures reject with a TributaryError, retriable when the connection was at fault.
 */
export class PostgresStateStore implements StateStore {
  private readonly kv: string;
  private readonly deadLetters: string;
  private readonly chunks: string;
  private readonly requests: string;
  private closed = false;
  /** The last put of each key still in progress. */
  private readonly writes = new Map<string, Promise<unknown>>();
  private leaseSession: Promise<LeaseSession> | undefined;
  readonly snapshots: SnapshotStore;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly url: string,
    /** The connection URL with its password masked, for messages. */
    readonly where: string,
    readonly schema: string,
    readonly readOnly: boolean,
  ) {
    this.kv = `${quoteIdent(schema)}.kv`;
    this.deadLetters = `${quoteIdent(schema)}.dead_letters`;
    this.chunks = `${quoteIdent(schema)}.snapshot_chunks`;
    this.requests = `${quoteIdent(schema)}.requests`;
    this.snapshots = this.snapshotStore();
  }

  static async open(
    config: { url: string; schema?: string },
    options: { readOnly?: boolean } = {},
  ): Promise<PostgresStateStore> {
    // An idle connection that drops emits 'error' on the pool; the next query reports it.
    const pool = new pg.Pool(pgConnection(config.url, { max: 2 }));
    pool.on('error', () => {});
    const store = new PostgresStateStore(pool, config.url, redactUrl(config.url), config.schema ?? 'tributary', options.readOnly ?? false);
    try {
      if (store.readOnly) await store.query('SELECT 1');
      else await store.createTables();
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
    return store;
  }

  async get<T>(key: string): Promise<T | undefined> {
    const rows = await this.read(`SELECT value FROM ${this.kv} WHERE key = $1`, [key]);
    return rows.length === 0 ? undefined : (rows[0].value as T);
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.write(key, 'value = excluded.value', jsonText(key, value));
  }

  async patch(key: string, fields: Record<string, unknown>): Promise<void> {
    // jsonb || merges the top-level fields in the statement that writes them: no read-modify-write.
    await this.write(key, 'value = kv.value || excluded.value', jsonText(key, fields));
  }

  /**
   * Upserts `text` under `key`, `update` saying what a conflict sets the value to. Writes of one
   * key run one at a time, in call order: on two pooled connections a later value could
   * otherwise be overwritten by an earlier one.
   */
  private async write(key: string, update: string, text: string): Promise<void> {
    this.assertWritable();
    const write = (this.writes.get(key) ?? Promise.resolve())
      .catch(() => undefined)
      .then(() =>
        this.query(
          `INSERT INTO ${this.kv} AS kv (key, value, updated_at) VALUES ($1, $2::jsonb, now())
           ON CONFLICT (key) DO UPDATE SET ${update}, updated_at = excluded.updated_at`,
          [key, text],
        ),
      );
    this.writes.set(key, write);
    try {
      await write;
    } finally {
      if (this.writes.get(key) === write) this.writes.delete(key);
    }
  }

  async addDeadLetter(letter: Omit<DeadLetter, 'id'>): Promise<DeadLetter> {
    this.assertWritable();
    const rows = await this.query(
      `INSERT INTO ${this.deadLetters} (lens, reason, error, attempts, first_seen, last_seen, provenance)
       VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING *`,
      [
        letter.lens,
        letter.reason,
        letter.error,
        letter.attempts,
        letter.firstSeen,
        letter.lastSeen,
        jsonText('dead letter provenance', letter.provenance),
      ],
    );
    return toDeadLetter(rows[0]);
  }

  async listDeadLetters(lens?: string, page?: { after?: string; limit: number }): Promise<DeadLetter[]> {
    const after = page?.after !== undefined && /^\d{1,18}$/.test(page.after) ? page.after : '0';
    const rows = await this.read(
      `SELECT * FROM ${this.deadLetters} WHERE ($1::text IS NULL OR lens = $1) AND id > $2::bigint ORDER BY id ${page ? 'LIMIT $3' : ''}`,
      page ? [lens ?? null, after, page.limit] : [lens ?? null, after],
    );
    return rows.map(toDeadLetter);
  }

  async removeDeadLetters(ids: string[]): Promise<number> {
    this.assertWritable();
    // Ids are bigserials; anything else cannot match.
    const numeric = ids.filter((id) => /^\d{1,18}$/.test(id));
    if (numeric.length === 0) return 0;
    const result = await this.run(`DELETE FROM ${this.deadLetters} WHERE id = ANY($1::bigint[])`, [numeric]);
    return result.rowCount ?? 0;
  }

  async countDeadLetters(lenses: string[]): Promise<Map<string, number>> {
    const rows = await this.read(`SELECT lens, count(*)::int AS n FROM ${this.deadLetters} WHERE lens = ANY($1::text[]) GROUP BY lens`, [lenses]);
    const counts = new Map(lenses.map((lens) => [lens, 0]));
    for (const row of rows) counts.set(row.lens as string, row.n as number);
    return counts;
  }

  async keys(prefix: string): Promise<string[]> {
    const pattern = prefix.replace(/[\\%_]/g, (c) => '\\' + c) + '%';
    return (await this.read(`SELECT key FROM ${this.kv} WHERE key LIKE $1`, [pattern])).map((row) => row.key as string);
  }

  async delete(key: string): Promise<void> {
    this.assertWritable();
    await this.query(`DELETE FROM ${this.kv} WHERE key = $1`, [key]);
  }

  async lease(name: string, options: { signal?: AbortSignal; waiting?: () => void } = {}): Promise<Lease> {
    this.assertWritable();
    const lockKey = `tributary lease ${this.schema} ${name}`;
    const lock = (fn: string) => `SELECT ${fn}(('x' || left(md5($1), 16))::bit(64)::bigint) AS ok`;
    let waited = false;
    for (;;) {
      options.signal?.throwIfAborted();
      if (this.closed) throw new TributaryError(`The state store at ${this.where} is closed`);
      let session: LeaseSession | undefined;
      try {
        session = await this.openLeaseSession();
        const { rows } = await session.client.query(lock('pg_try_advisory_lock'), [lockKey]);
        if (rows[0].ok) break;
      } catch (err) {
        // The session broke (it is replaced on the next try); anything else is not ours to retry.
        if (!session?.ended && !this.wrap(err).retriable) throw this.wrap(err);
      }
      if (!waited) options.waiting?.();
      waited = true;
      await sleep(LEASE_RETRY_MS, undefined, { signal: options.signal });
    }
    const session = await this.openLeaseSession();
    let onLost!: (err: Error) => void;
    const lost = new Promise<Error>((resolve) => (onLost = resolve));
    const signalLost = (err: Error) =>
      onLost(new TributaryError(`Lost the lease ${name}: the state store session at ${this.where} ended (${redactUrl(err.message)}); another replica may take over`));
    session.held.add(signalLost);
    return {
      lost,
      release: async () => {
        if (!session.held.delete(signalLost) || session.ended) return;
        await session.client.query(lock('pg_advisory_unlock'), [lockKey]).catch(() => undefined);
      },
    };
  }

  async sendRequest(request: ControlRequest): Promise<string> {
    try {
      const rows = await this.query(`INSERT INTO ${this.requests} (body) VALUES ($1::jsonb) RETURNING id`, [jsonText('request', request)]);
      return String(rows[0].id);
    } catch (err) {
      const code = ((err as TributaryError).cause as { code?: string } | undefined)?.code;
      if (code === '42P01' || code === '3F000') {
        throw new TributaryError(`No Tributary daemon has run with the state store at ${this.where} (schema ${this.schema}); start one with \`tributary run\``);
      }
      throw err;
    }
  }

  async requestPending(id: string): Promise<boolean> {
    return (await this.read(`SELECT 1 FROM ${this.requests} WHERE id = $1`, [id])).length > 0;
  }

  async takeRequests(lenses: string[]): Promise<Array<{ id: string; request: ControlRequest }>> {
    this.assertWritable();
    const rows = await this.query(
      `DELETE FROM ${this.requests}
        WHERE body->>'lens' = ANY($1::text[]) OR (body->>'expiresAt')::bigint < $2
        RETURNING id, body`,
      [lenses, Date.now()],
    );
    return rows.sort((a, b) => Number(a.id) - Number(b.id)).map((r) => ({ id: String(r.id), request: r.body as ControlRequest }));
  }

  private snapshotStore(): SnapshotStore {
    const store = this;
    const readChunks = async (name: string, committed: boolean, bucket: number): Promise<SnapshotEntry[]> => {
      const rows = await store.query(`SELECT entries FROM ${store.chunks} WHERE name = $1 AND committed = $2 AND bucket = $3 ORDER BY seq`, [name, committed, bucket]);
      return rows.flatMap((r) => (r.entries as string).split('\n').filter(Boolean).map((l) => JSON.parse(l) as SnapshotEntry));
    };
    return {
      async write(name: string): Promise<SnapshotWriter> {
        store.assertWritable();
        await store.run(`DELETE FROM ${store.chunks} WHERE name = $1 AND NOT committed`, [name]);
        return {
          async append(bucket, entries) {
            if (entries.length === 0) return;
            await store.run(`INSERT INTO ${store.chunks} (name, committed, bucket, entries) VALUES ($1, false, $2, $3)`, [
              name,
              bucket,
              entries.map((e) => JSON.stringify(e)).join('\n'),
            ]);
          },
          read: (bucket) => readChunks(name, false, bucket),
          async commit() {
            await store.run(`INSERT INTO ${store.chunks} (name, committed, bucket, entries) VALUES ($1, false, -1, '')`, [name]);
            const client = await store.pool.connect();
            try {
              await client.query('BEGIN');
              await client.query(`DELETE FROM ${store.chunks} WHERE name = $1 AND committed`, [name]);
              await client.query(`UPDATE ${store.chunks} SET committed = true WHERE name = $1`, [name]);
              await client.query('COMMIT');
            } catch (err) {
              await client.query('ROLLBACK').catch(() => {});
              throw store.wrap(err);
            } finally {
              client.release();
            }
          },
          async abort() {
            await store.run(`DELETE FROM ${store.chunks} WHERE name = $1 AND NOT committed`, [name]);
          },
        };
      },
      async remove(name) {
        store.assertWritable();
        await store.run(`DELETE FROM ${store.chunks} WHERE name = $1`, [name]);
      },
      async read(name, bucket) {
        const marker = await store.read(`SELECT 1 FROM ${store.chunks} WHERE name = $1 AND committed AND bucket = -1`, [name]);
        return marker.length === 0 ? undefined : readChunks(name, true, bucket);
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const session = await this.leaseSession?.catch(() => undefined);
    if (session) {
      session.ended = true;
      await session.client.end().catch(() => undefined);
    }
    await this.pool.end();
  }

  /** The lease session, connecting it when there is none (or the last one ended). */
  private openLeaseSession(): Promise<LeaseSession> {
    const opening = (this.leaseSession ??= (async () => {
      const client = new pg.Client(pgConnection(this.url, { keepAlive: true, query_timeout: 10_000, application_name: 'tributary:lease' }));
      const session: LeaseSession = { client, held: new Set(), ended: false };
      const end = (err: Error) => {
        if (session.ended) return;
        session.ended = true;
        if (this.leaseSession === opening) this.leaseSession = undefined;
        clearInterval(ping);
        for (const lost of session.held) lost(err);
        session.held.clear();
        client.end().catch(() => undefined);
      };
      client.on('error', end);
      client.on('end', () => end(new Error('the connection ended')));
      // A session the server ended (or a network that went away) shows up on the next query.
      const ping = setInterval(() => void client.query('SELECT 1').catch(end), LEASE_RETRY_MS * 2);
      ping.unref();
      try {
        await client.connect();
      } catch (err) {
        end(err as Error);
        throw err;
      }
      return session;
    })());
    return opening;
  }

  private async createTables(): Promise<void> {
    const schema = quoteIdent(this.schema);
    // One multi-statement query is one transaction; the advisory lock keeps two daemons
    // starting at once from racing on CREATE … IF NOT EXISTS.
    await this.run(`
      SELECT pg_advisory_xact_lock(hashtext('tributary state ' || ${quoteLiteral(this.schema)}));
      CREATE SCHEMA IF NOT EXISTS ${schema};
      CREATE TABLE IF NOT EXISTS ${this.kv} (
        key text PRIMARY KEY,
        value jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE IF NOT EXISTS ${this.deadLetters} (
        id bigserial PRIMARY KEY,
        lens text,
        reason text,
        error text,
        attempts int,
        first_seen timestamptz,
        last_seen timestamptz,
        provenance jsonb
      );
      CREATE INDEX IF NOT EXISTS dead_letters_lens ON ${this.deadLetters} (lens, id);
      CREATE TABLE IF NOT EXISTS ${this.chunks} (
        name text NOT NULL,
        committed boolean NOT NULL,
        bucket int NOT NULL,
        seq bigserial,
        entries text NOT NULL,
        PRIMARY KEY (name, committed, bucket, seq)
      );
      CREATE TABLE IF NOT EXISTS ${this.requests} (id bigserial PRIMARY KEY, body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now());`);
  }

  /** A query that reads; a read-only store sees a schema nobody has created yet as empty. */
  private async read(sql: string, params?: unknown[]): Promise<any[]> {
    try {
      return await this.query(sql, params);
    } catch (err) {
      const code = ((err as TributaryError).cause as { code?: string } | undefined)?.code;
      if (this.readOnly && (code === '42P01' || code === '3F000')) return [];
      throw err;
    }
  }

  private async query(sql: string, params?: unknown[]): Promise<any[]> {
    return (await this.run(sql, params)).rows;
  }

  private async run(sql: string, params?: unknown[]): Promise<pg.QueryResult> {
    if (this.closed) throw new TributaryError(`The state store at ${this.where} is closed`);
    try {
      return await this.pool.query(sql, params);
    } catch (err) {
      throw this.wrap(err);
    }
  }

  private wrap(err: unknown): TributaryError {
    if (err instanceof TributaryError) return err;
    const refused = connectionRefusal(err, `PostgreSQL state store at ${this.where}`);
    if (refused) return refused;
    const { message } = err as { message?: string };
    const retriable = isRetriablePgError(err);
    return new TributaryError(
      `PostgreSQL state store at ${this.where} (schema ${this.schema}): ${redactUrl(message ?? String(err))}`,
      { retriable, cause: err },
    );
  }

  private assertWritable(): void {
    if (this.readOnly) {
      throw new TributaryError(`The state store at ${this.where} was opened read-only; only the running daemon writes it`);
    }
  }
}

/** `name` as a quoted SQL identifier: `"my ""odd"" schema"`. */
function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

function jsonText(what: string, value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`State value for ${what} is not JSON-serialisable`);
  return text;
}

function iso(value: unknown): string {
  return value instanceof Date ? value.toISOString() : String(value ?? '');
}

function toDeadLetter(row: any): DeadLetter {
  return {
    id: String(row.id),
    lens: row.lens,
    reason: row.reason,
    error: row.error,
    attempts: row.attempts,
    firstSeen: iso(row.first_seen),
    lastSeen: iso(row.last_seen),
    provenance: row.provenance ?? {},
  };
}
