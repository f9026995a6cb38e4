/**
 * The `pgvector` vector index (`worker.index: { type: pgvector, url, schema }`): every lens in a
 * PostgreSQL database with the pgvector extension, for production deployments (several worker
 * replicas can serve searches from it; the daemon's disk holds nothing of it).
 *
 * Layout: one table per lens in `schema` (created if missing), named `lens_<lens>` (a lens
 * name longer than 58 characters is cut and suffixed with a hash of the whole name):
 *
 *   id            text COLLATE "C" PRIMARY KEY   -- byte order: the order `idsAfter` pages in
 *   content       text NOT NULL
 *   metadata      jsonb NOT NULL
 *   metadata_text text NOT NULL                  -- the top-level string values of metadata
 *   content_hash  text NOT NULL
 *   embedding     vector(N) NOT NULL
 *   tsv           tsvector GENERATED ALWAYS AS (to_tsvector('simple', content || ' ' || metadata_text)) STORED
 *   + an HNSW index on embedding (vector_cosine_ops) and a GIN index on tsv.
 *
 * A table per lens (rather than one table with a lens column) because each lens has its own
 * dimension count N, an HNSW index needs a column of fixed dimensions, and dropping a lens is
 * one DROP TABLE. The table and its indexes are created by the lens's first upsert, which fixes
 * N. Above 2,000 dimensions (pgvector's HNSW limit for `vector`) the index is built on
 * `embedding::halfvec(N)` (up to 4,000 dimensions; scores then carry half precision); above
 * 4,000 there is no index and searches scan the table exactly.
 *
 * Semantics, as in the embedded index:
 * - Semantic scores are cosine similarity, `1 - (embedding <=> query)` clamped to [0, 1]; the
 *   HNSW search is approximate (`hnsw.ef_search` is raised with the limit, see EF_SEARCH_*).
 * - Keyword search is PostgreSQL full text search with the `simple` configuration (lower-cased
 *   words, no stemming, no stop words) over the content and the top-level string metadata
 *   values, ranked by `ts_rank_cd` and normalised to [0, 1] by the best hit. Query words are
 *   OR'ed (a document needs one of them, like the embedded index); each word, a quoted
 *   "phrase" or a -word to exclude follows `websearch_to_tsquery('simple', …)`.
 * - `idsAfter` pages in `COLLATE "C"` order: the byte order of the ids' UTF-8, which is
 *   JavaScript's string order (UTF-16 code units) for every id without characters beyond
 *   U+FFFF. An id with such a character (an emoji) sorts after ids with U+E000–U+FFFF at the
 *   same position in PostgreSQL, before them in JavaScript. Paging stays correct (each id once,
 *   in the database's order) as long as the caller only feeds back ids the index returned.
 * - Writes of one lens apply one at a time, in call order, within this process; each upsert or
 *   delete is one transaction, durable when it resolves (with the server's synchronous_commit).
 * - PostgreSQL text cannot hold NUL (U+0000): a record with one is refused with a
 *   RecordRejectedError (the worker dead-letters it).
 *   A primary key entry holds at most about 2,700 bytes, which bounds the length of an id.
 *
 * Database failures reject with a TributaryError, retriable when the connection was at fault.
 * The database needs PostgreSQL 12+ (generated columns) and pgvector 0.5+ (HNSW).
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { describeError, RecordRejectedError, TributaryError } from '../../errors.js';
import { redactUrl } from '../../log.js';
import { connectionRefusal, isDataError, isRetriablePgError, pgConnection, sqlState } from '../../postgres.js';
import type { Logger } from '../../types.js';
import type { IndexRecord, SearchHit, VectorIndex } from '../types.js';
import { checkLensName, checkMetadataUpdate, checkUpsert } from './checks.js';

const UNDEFINED_TABLE = '42P01';
const TABLE_PREFIX = 'lens_';
/** PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes). */
const MAX_IDENTIFIER = 63;
/** pgvector's HNSW limits: `vector` up to 2,000 dimensions, `halfvec` up to 4,000. */
const HNSW_MAX_VECTOR_DIMS = 2_000;
const HNSW_MAX_HALFVEC_DIMS = 4_000;
/**
 * `hnsw.ef_search` of a search: the candidate list the HNSW scan keeps, which is also the most
 * rows it returns (pgvector's default is 40). Twice the rows asked for, at least 100, at most
 * 1,000 (pgvector's maximum); a search for more than 1,000 rows scans the table exactly.
 */
const EF_SEARCH_MIN = 100;
const EF_SEARCH_MAX = 1_000;
/** Records per INSERT statement (an upsert of more runs several in one transaction). */
const UPSERT_CHUNK_RECORDS = 500;
/** Keyword queries are cut to this many terms. */
const MAX_QUERY_TERMS = 64;
const POOL_SIZE = 8;

export interface PgvectorIndexOptions {
  /** Where notices worth an operator's attention go (no index above 4,000 dimensions). */
  logger?: Logger;
  /**
   * pgvector's HNSW parameters (https://github.com/pgvector/pgvector#hnsw): `m` and
   * `efConstruction` for tables created from now on, `efSearch` the least `hnsw.ef_search`.
   */
  hnsw?: { m?: number; efConstruction?: number; efSearch?: number };
}

/** What this process knows of one lens's table. */
interface LensTable {
  /** Schema-qualified, quoted. */
  table: string;
  dims: number;
}

/**
 * A VectorIndex in PostgreSQL + pgvector: see the module comment for the layout and semantics.
 */
export class PgvectorIndex implements VectorIndex {
  private readonly lenses = new Map<string, LensTable>();
  /** Writes of each lens, one at a time, in call order. */
  private readonly queues = new Map<string, Promise<unknown>>();
  private closed = false;
  /** The extension's schema, quoted: types and operators are qualified with it. */
  private readonly ext: string;

  private constructor(
    private readonly pool: pg.Pool,
    /** The connection URL with its password masked, for messages. */
    readonly where: string,
    readonly schema: string,
    extensionSchema: string,
    /** pgvector's version as [major, minor, patch]. */
    private readonly extVersion: number[],
    private readonly logger: Logger | undefined,
    private readonly hnsw: NonNullable<PgvectorIndexOptions['hnsw']> = {},
  ) {
    this.ext = quoteIdent(extensionSchema);
  }

  /**
   * Connects, creates the pgvector extension if it is missing (which needs a role allowed to,
   * and pgvector installed on the server) and the schema if it is missing.
   */
  static async open(config: { url: string; schema: string }, options: PgvectorIndexOptions = {}): Promise<PgvectorIndex> {
    const where = redactUrl(config.url);
    const pool = new pg.Pool(pgConnection(config.url, { max: POOL_SIZE, application_name: 'tributary-pgvector' }));
    // An idle connection that drops emits 'error' on the pool; the next query reports it.
    pool.on('error', () => {});
    try {
      const setup = await connectAndSetUp(pool, where, config.schema);
      return new PgvectorIndex(pool, where, config.schema, setup.extSchema, setup.version, options.logger, options.hnsw);
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
  }

  async upsert(lens: string, records: IndexRecord[]): Promise<void> {
    this.assertOpen();
    const { dims, metadataJson } = checkUpsert(lens, records);
    if (records.length === 0) return;
    if (dims > 16_000) throw new TributaryError(`Records of lens ${lens} have ${dims} dimensions; pgvector stores at most 16,000`);
    // Last one wins when an id comes twice (one INSERT … ON CONFLICT cannot touch a row twice).
    const byId = new Map<string, { r: IndexRecord; json: string }>();
    records.forEach((r, i) => byId.set(r.id, { r, json: metadataJson[i] }));
    const rows = [...byId.values()].map(({ r, json }) => ({
      id: r.id,
      content: r.content,
      metadata: json,
      metadataText: metadataText(r.metadata),
      hash: r.contentHash,
      vector: vectorLiteral(r.vector),
    }));
    for (const row of rows) checkNul(lens, row.id, row);
    await this.onLens(lens, async () => {
      try {
        await this.insert(lens, dims, records[0].id, rows);
      } catch (err) {
        // The table was dropped behind this process's back: create it again, once.
        if (!((err as TributaryError).cause && ((err as TributaryError).cause as { code?: string }).code === UNDEFINED_TABLE)) throw err;
        await this.insert(lens, dims, records[0].id, rows);
      }
    });
  }

  /** Upserts rows (of `dims` dimensions) in one transaction, creating the table when missing. */
  private async insert(
    lens: string,
    dims: number,
    firstId: string,
    rows: Array<{ id: string; content: string; metadata: string; metadataText: string; hash: string; vector: string }>,
  ): Promise<void> {
    const known = await this.tableFor(lens, dims, firstId);
    const { table } = known;
    const client = await this.connect();
    let failed: unknown;
    try {
      await client.query('BEGIN');
      for (let i = 0; i < rows.length; i += UPSERT_CHUNK_RECORDS) {
        const chunk = rows.slice(i, i + UPSERT_CHUNK_RECORDS);
        await client.query(
          `INSERT INTO ${table} AS t (id, content, metadata, metadata_text, content_hash, embedding)
           SELECT u.id, u.content, u.metadata::jsonb, u.metadata_text, u.content_hash, u.embedding::${this.ext}.vector(${known.dims})
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
             AS u(id, content, metadata, metadata_text, content_hash, embedding)
           ON CONFLICT (id) DO UPDATE SET
             content = excluded.content, metadata = excluded.metadata, metadata_text = excluded.metadata_text,
             content_hash = excluded.content_hash, embedding = excluded.embedding
           WHERE t.content_hash <> excluded.content_hash OR t.content <> excluded.content
             OR t.metadata <> excluded.metadata OR NOT (t.embedding OPERATOR(${this.ext}.=) excluded.embedding)`,
          [
            chunk.map((r) => r.id),
            chunk.map((r) => r.content),
            chunk.map((r) => r.metadata),
            chunk.map((r) => r.metadataText),
            chunk.map((r) => r.hash),
            chunk.map((r) => r.vector),
          ],
        );
      }
      await client.query('COMMIT');
    } catch (err) {
      failed = err;
      throw this.wrap(err, `upserting into lens ${lens}`);
    } finally {
      // A failed transaction's connection is dropped rather than rolled back and reused.
      client.release(failed instanceof Error ? failed : undefined);
      if (failed !== undefined && (failed as { code?: string }).code === UNDEFINED_TABLE) this.lenses.delete(lens);
    }
  }

  async delete(lens: string, ids: string[]): Promise<number> {
    this.assertOpen();
    checkLensName(lens);
    if (ids.length === 0) return 0;
    return this.onLens(lens, async () => {
      const known = await this.lookUp(lens);
      if (!known) return 0;
      const result = await this.run(lens, `DELETE FROM ${known.table} WHERE id = ANY($1::text[])`, [withoutNul(ids)]);
      return result?.rowCount ?? 0;
    });
  }

  async updateMetadata(lens: string, records: Array<{ id: string; metadata: Record<string, unknown> }>): Promise<void> {
    this.assertOpen();
    const json = checkMetadataUpdate(lens, records);
    const byId = new Map<string, { metadata: Record<string, unknown>; json: string }>();
    records.forEach((r, i) => {
      if (!r.id.includes('\0')) byId.set(r.id, { metadata: r.metadata, json: json[i] });
    });
    if (byId.size === 0) return;
    const metadata = [...byId.values()].map((m) => m.json);
    for (const [i, id] of [...byId.keys()].entries()) checkNul(lens, id, { id, content: '', metadata: metadata[i], hash: '' });
    await this.onLens(lens, async () => {
      const known = await this.lookUp(lens);
      if (!known) return;
      await this.run(
        lens,
        `UPDATE ${known.table} AS t SET metadata = u.metadata::jsonb, metadata_text = u.metadata_text
           FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, metadata, metadata_text)
          WHERE t.id = u.id AND t.metadata <> u.metadata::jsonb`,
        [[...byId.keys()], metadata, [...byId.values()].map((m) => metadataText(m.metadata))],
      );
    });
  }

  async hashes(lens: string, ids: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const known = await this.readable(lens);
    if (!known || ids.length === 0) return out;
    const result = await this.run(lens, `SELECT id, content_hash FROM ${known.table} WHERE id = ANY($1::text[])`, [withoutNul(ids)]);
    for (const row of result?.rows ?? []) out.set(row.id, row.content_hash);
    return out;
  }

  async get(lens: string, id: string): Promise<IndexRecord | undefined> {
    const known = await this.readable(lens);
    if (!known || id.includes('\0')) return undefined;
    const result = await this.run(
      lens,
      `SELECT id, content, metadata, content_hash, embedding::text AS embedding FROM ${known.table} WHERE id = $1`,
      [id],
    );
    const row = result?.rows[0];
    if (!row) return undefined;
    return { id: row.id, content: row.content, metadata: row.metadata, vector: parseVector(row.embedding), contentHash: row.content_hash };
  }

  async searchVector(
    lens: string,
    vector: Float32Array,
    options: { limit: number; minScore: number; excludeId?: string; exact?: boolean },
  ): Promise<SearchHit[]> {
    const limit = Math.floor(options.limit);
    let known = await this.readable(lens);
    if (!known || !(limit >= 1)) return [];
    if (vector.length !== known.dims) {
      // Another process may have rebuilt the lens: look again before failing.
      this.lenses.delete(lens);
      known = await this.lookUp(lens);
      if (!known) return [];
      if (vector.length !== known.dims) {
        throw new TributaryError(
          `Lens ${lens} stores ${known.dims}-dimensional vectors but the query vector has ${vector.length}: the embedder changed. ` +
            `Rebuild the lens (${this.rebuildHint(lens, known.table)}).`,
        );
      }
    }
    for (let i = 0; i < vector.length; i++) {
      if (!Number.isFinite(vector[i])) throw new TributaryError(`The query vector of lens ${lens} holds ${vector[i]}`);
    }
    // One more row when one is to be left out (filtering in SQL would cost the HNSW scan rows).
    const fetch = limit + (options.excludeId === undefined ? 0 : 1);
    const { dims } = known;
    const literal = `'${vectorLiteral(vector)}'`;
    // The expression the lens's HNSW index is on (see createTableSql), so the scan can use it.
    const distance = this.halfvecIndexed(dims)
      ? `(embedding::${this.ext}.halfvec(${dims})) OPERATOR(${this.ext}.<=>) ${literal}::${this.ext}.halfvec(${dims})`
      : `embedding OPERATOR(${this.ext}.<=>) ${literal}::${this.ext}.vector(${dims})`;
    const efSearch = Math.min(EF_SEARCH_MAX, Math.max(this.hnsw.efSearch ?? EF_SEARCH_MIN, 2 * fetch));
    const tuning = fetch <= EF_SEARCH_MAX && !options.exact ? `SET LOCAL hnsw.ef_search = ${efSearch}` : 'SET LOCAL enable_indexscan = off';
    // One round trip: the query text holds only numbers besides the (quoted) table name, and
    // SET LOCAL keeps the setting to this transaction (safe behind a transaction-mode pooler).
    const client = await this.connect();
    let failed: unknown;
    let rows: Array<{ id: string; content: string; metadata: Record<string, unknown>; distance: number | null }>;
    try {
      const results = (await client.query(
        `BEGIN; ${tuning};
         SELECT id, content, metadata, ${distance} AS distance FROM ${known.table} ORDER BY distance LIMIT ${fetch};
         COMMIT;`,
      )) as unknown as pg.QueryResult[];
      rows = results.find((r) => r.command === 'SELECT')!.rows;
    } catch (err) {
      failed = err;
      if ((err as { code?: string }).code === UNDEFINED_TABLE) {
        this.lenses.delete(lens);
        return [];
      }
      throw this.wrap(err, `searching lens ${lens}`);
    } finally {
      client.release(failed instanceof Error ? failed : undefined);
    }
    const hits: SearchHit[] = [];
    for (const row of rows) {
      if (row.id === options.excludeId) continue;
      const similarity = 1 - Number(row.distance);
      const score = similarity > 1 ? 1 : similarity > 0 ? similarity : 0; // NaN (a zero vector) → 0
      if (score < options.minScore) continue;
      hits.push({ id: row.id, content: row.content, metadata: row.metadata, score });
    }
    // Equal scores (several clamped to 0, say) in id order, as the embedded index returns them.
    hits.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return hits.slice(0, limit);
  }

  async searchKeyword(lens: string, query: string, options: { limit: number; minScore: number }): Promise<SearchHit[]> {
    const known = await this.readable(lens);
    const limit = Math.floor(options.limit);
    if (!known || !(limit >= 1)) return [];
    const terms = queryTerms(query.replace(/\0/g, ' '));
    if (terms.positive.length === 0) return [];
    const params: string[] = [];
    const term = (text: string) => {
      params.push(text);
      return `websearch_to_tsquery('pg_catalog.simple', $${params.length})`;
    };
    const positive = terms.positive.map(term).join(' || ');
    const wanted = ['p.positive', ...terms.negative.map(term)].join(' && ');
    params.push(String(limit));
    // `numnode`: a query whose wanted words all parse to nothing (punctuation) matches nothing,
    // rather than everything without the excluded words.
    const result = await this.run(
      lens,
      `SELECT id, content, metadata, ts_rank_cd(tsv, q.query, 1) AS rank
       FROM ${known.table}, (SELECT p.positive, ${wanted} AS query FROM (SELECT ${positive} AS positive) AS p) AS q
       WHERE numnode(q.positive) > 0 AND tsv @@ q.query
       ORDER BY rank DESC, id COLLATE "C"
       LIMIT $${params.length}::int`,
      params,
    );
    const rows = result?.rows ?? [];
    if (rows.length === 0) return [];
    const best = Number(rows[0].rank);
    const hits: SearchHit[] = [];
    for (const row of rows) {
      const score = best > 0 ? Math.min(1, Number(row.rank) / best) : 0;
      if (score < options.minScore) break;
      hits.push({ id: row.id, content: row.content, metadata: row.metadata, score });
    }
    return hits;
  }

  async count(lens: string): Promise<number> {
    const known = await this.readable(lens);
    if (!known) return 0;
    const result = await this.run(lens, `SELECT count(*) AS n FROM ${known.table}`);
    return Number(result?.rows[0]?.n ?? 0);
  }

  async idsAfter(lens: string, after: string | undefined, limit: number): Promise<string[]> {
    const known = await this.readable(lens);
    const n = Math.floor(limit);
    if (!known || !(n >= 1)) return [];
    const result =
      after === undefined
        ? await this.run(lens, `SELECT id FROM ${known.table} ORDER BY id COLLATE "C" LIMIT $1::int`, [n])
        : await this.run(
            lens,
            `SELECT id FROM ${known.table} WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C" LIMIT $2::int`,
            // NUL cannot be stored; every stored id that sorts after `a\0…` sorts after `a` too.
            [after.includes('\0') ? after.slice(0, after.indexOf('\0')) : after, n],
          );
    const ids = (result?.rows ?? []).map((row) => row.id as string);
    return after !== undefined && after.includes('\0') ? ids.filter((id) => id > after) : ids;
  }

  /** Waits for writes in progress and closes the connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.queues.values()]);
    await this.pool.end();
  }

  // ---- tables ----------------------------------------------------------------------------

  /** The lens's table for reading, or undefined when the lens has none yet. */
  private async readable(lens: string): Promise<LensTable | undefined> {
    this.assertOpen();
    checkLensName(lens);
    return this.lookUp(lens);
  }

  /** The lens's table (as cached, else from the catalog), or undefined. */
  private async lookUp(lens: string): Promise<LensTable | undefined> {
    const cached = this.lenses.get(lens);
    if (cached) return cached;
    const name = tableName(lens);
    const result = await this.run(
      lens,
      `SELECT a.atttypmod AS dims FROM pg_catalog.pg_attribute a
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = 'embedding' AND NOT a.attisdropped`,
      [this.schema, name],
    );
    const row = result?.rows[0];
    if (!row) return undefined;
    const known = { table: `${quoteIdent(this.schema)}.${quoteIdent(name)}`, dims: Number(row.dims) };
    this.lenses.set(lens, known);
    return known;
  }

  /**
   * The lens's table for `dims`-dimensional records: created (with its indexes) when missing,
   * re-created when it is empty and of other dimensions; an error when it holds records of
   * other dimensions. Runs on the lens's write queue.
   */
  private async tableFor(lens: string, dims: number, firstId: string): Promise<LensTable> {
    const known = await this.lookUp(lens);
    if (known && known.dims === dims) return known;
    const name = tableName(lens);
    const table = `${quoteIdent(this.schema)}.${quoteIdent(name)}`;
    const client = await this.connect();
    let failed: unknown;
    try {
      await client.query('BEGIN');
      // Two processes creating the same lens at once: the second waits, then sees the table.
      await client.query(`SELECT pg_advisory_xact_lock(hashtext('tributary pgvector'), hashtext($1))`, [table]);
      const existing = await client.query(
        `SELECT a.atttypmod AS dims FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = 'embedding' AND NOT a.attisdropped`,
        [this.schema, name],
      );
      if (existing.rows.length > 0) {
        const stored = Number(existing.rows[0].dims);
        if (stored === dims) {
          await client.query('COMMIT');
          const found = { table, dims };
          this.lenses.set(lens, found);
          return found;
        }
        await client.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
        const empty = (await client.query(`SELECT NOT EXISTS (SELECT 1 FROM ${table}) AS empty`)).rows[0].empty as boolean;
        if (!empty) {
          await client.query('ROLLBACK');
          this.lenses.set(lens, { table, dims: stored });
          throw new TributaryError(
            `Lens ${lens} stores ${stored}-dimensional vectors but record ${firstId} has ${dims}: the embedder changed. ` +
              `Rebuild the lens: ${this.rebuildHint(lens, table)}.`,
          );
        }
        // An emptied lens takes the dimensions of its next records.
        await client.query(`DROP TABLE ${table}`);
      }
      await client.query(this.createTableSql(table, dims));
      await client.query('COMMIT');
    } catch (err) {
      failed = err;
      if (err instanceof TributaryError) throw err;
      throw this.wrap(err, `creating the table of lens ${lens}`);
    } finally {
      client.release(failed instanceof Error && !(failed instanceof TributaryError) ? failed : undefined);
    }
    if (dims > HNSW_MAX_VECTOR_DIMS && !this.halfvecIndexed(dims)) {
      this.logger?.warn(
        { lens, dims, table },
        `pgvector cannot index ${dims}-dimensional vectors with HNSW: semantic searches of this lens scan every row`,
      );
    }
    const created = { table, dims };
    this.lenses.set(lens, created);
    return created;
  }

  /** The HNSW index's storage parameters: integers checked by the configuration schema, checked again here. */
  private hnswWith(): string {
    const m = Math.trunc(this.hnsw.m ?? 16);
    const ef = Math.trunc(this.hnsw.efConstruction ?? 64);
    if (!(m >= 2 && m <= 100 && ef >= 4 && ef <= 1000)) throw new TributaryError(`Invalid pgvector HNSW parameters m=${m}, efConstruction=${ef}`);
    return `WITH (m = ${m}, ef_construction = ${Math.max(ef, 2 * m)})`;
  }

  private createTableSql(table: string, dims: number): string {
    const ext = this.ext;
    let vectorIndex = '';
    if (dims <= HNSW_MAX_VECTOR_DIMS) {
      vectorIndex = `CREATE INDEX ON ${table} USING hnsw (embedding ${ext}.vector_cosine_ops) ${this.hnswWith()};`;
    } else if (this.halfvecIndexed(dims)) {
      vectorIndex = `CREATE INDEX ON ${table} USING hnsw ((embedding::${ext}.halfvec(${dims})) ${ext}.halfvec_cosine_ops) ${this.hnswWith()};`;
    }
    return `
      CREATE TABLE ${table} (
        id text COLLATE "C" PRIMARY KEY,
        content text NOT NULL,
        metadata jsonb NOT NULL,
        metadata_text text NOT NULL,
        content_hash text NOT NULL,
        embedding ${ext}.vector(${dims}) NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('pg_catalog.simple'::regconfig, content || ' ' || metadata_text)) STORED
      );
      ${vectorIndex}
      CREATE INDEX ON ${table} USING gin (tsv);`;
  }

  /** Whether the lens's HNSW index is on `embedding::halfvec(dims)` (halfvec: pgvector 0.7+). */
  private halfvecIndexed(dims: number): boolean {
    const [major, minor] = this.extVersion;
    return dims > HNSW_MAX_VECTOR_DIMS && dims <= HNSW_MAX_HALFVEC_DIMS && (major > 0 || minor >= 7);
  }

  private rebuildHint(lens: string, table: string): string {
    return `stop Tributary, run \`DROP TABLE ${table}\` in the database at ${this.where}, start it again and run \`tributary ingest ${lens} --mode full\``;
  }

  // ---- plumbing --------------------------------------------------------------------------

  /** Runs one statement; undefined when the lens's table is gone (dropped by someone else). */
  private async run(lens: string, sql: string, params?: unknown[]): Promise<pg.QueryResult | undefined> {
    this.assertOpen();
    try {
      return await this.pool.query(sql, params);
    } catch (err) {
      if ((err as { code?: string }).code === UNDEFINED_TABLE && this.lenses.has(lens)) {
        this.lenses.delete(lens);
        return undefined;
      }
      throw this.wrap(err, `lens ${lens}`);
    }
  }

  private async connect(): Promise<pg.PoolClient> {
    this.assertOpen();
    try {
      return await this.pool.connect();
    } catch (err) {
      throw this.wrap(err, 'connecting');
    }
  }

  private onLens<T>(lens: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(lens) ?? Promise.resolve();
    const result = previous.then(() => {
      this.assertOpen();
      return fn();
    });
    const settled = result.catch(() => undefined);
    this.queues.set(lens, settled);
    // Forget an idle lens's queue.
    void settled.then(() => {
      if (this.queues.get(lens) === settled) this.queues.delete(lens);
    });
    return result;
  }

  private wrap(err: unknown, doing: string): TributaryError {
    if (err instanceof TributaryError) return err;
    return wrapError(err, `pgvector index at ${this.where} (schema ${this.schema}), ${doing}`);
  }

  private assertOpen(): void {
    if (this.closed) throw new TributaryError(`The pgvector index at ${this.where} (schema ${this.schema}) is closed`);
  }
}

/**
 * Checks the server (UTF8 encoding), creates the pgvector extension if missing and the schema
 * if missing. Returns the extension's schema and version.
 */
async function connectAndSetUp(pool: pg.Pool, where: string, schema: string): Promise<{ extSchema: string; version: number[] }> {
  const context = `pgvector index at ${where}`;
  const query = async (sql: string, params?: unknown[]) => {
    try {
      return await pool.query(sql, params);
    } catch (err) {
      throw wrapError(err, context);
    }
  };
  const info = (await query(`SELECT current_setting('server_encoding') AS encoding, current_setting('server_version_num')::int AS version`)).rows[0];
  if (info.encoding !== 'UTF8') {
    throw new TributaryError(
      `${context}: the database's encoding is ${info.encoding}; the pgvector index needs a UTF8 database (CREATE DATABASE … ENCODING 'UTF8')`,
    );
  }
  if (info.version < 120000) {
    throw new TributaryError(`${context}: PostgreSQL ${info.version} is too old; the pgvector index needs PostgreSQL 12 or later`);
  }
  const extensionSql = `SELECT e.extversion AS version, n.nspname AS schema FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'`;
  let extension = (await query(extensionSql)).rows[0];
  if (!extension) {
    try {
      await pool.query('CREATE EXTENSION IF NOT EXISTS vector');
    } catch (err) {
      if (sqlState(err) !== undefined && !isRetriablePgError(err)) {
        throw new TributaryError(
          `${context}: could not create the pgvector extension (${describeError(err)}). The index type pgvector needs ` +
            `the pgvector extension (https://github.com/pgvector/pgvector, 0.5.0 or later) installed on the PostgreSQL server ` +
            `(e.g. apt-get install postgresql-<major>-pgvector; it is built into most managed services) and created in this ` +
            `database, by a role allowed to: CREATE EXTENSION vector;`,
          { cause: err },
        );
      }
      throw wrapError(err, context);
    }
    extension = (await query(extensionSql)).rows[0];
  }
  const version = String(extension.version)
    .split('.')
    .map((part) => parseInt(part, 10) || 0);
  if (version[0] === 0 && version[1] < 5) {
    throw new TributaryError(`${context}: pgvector ${extension.version} has no HNSW index; upgrade it to 0.5.0 or later (ALTER EXTENSION vector UPDATE)`);
  }
  // Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when it exists.
  const schemaExists = (await query('SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1', [schema])).rows.length > 0;
  if (!schemaExists) {
    await query(`
      SELECT pg_advisory_xact_lock(hashtext('tributary pgvector'), hashtext(${quoteLiteral(schema)}));
      CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)};`);
  }
  return { extSchema: extension.schema as string, version };
}

function wrapError(err: unknown, context: string): TributaryError {
  if (err instanceof TributaryError) return err;
  const refused = connectionRefusal(err, context);
  if (refused) return refused;
  const { message } = err as { message?: string };
  if (isDataError(err)) return new RecordRejectedError(`${context}: ${message}`, { cause: err });
  const retriable = isRetriablePgError(err);
  return new TributaryError(`${context}: ${redactUrl(message ?? String(err))}`, { retriable, cause: err });
}

/** The table of a lens: `lens_<lens>`, or, past PostgreSQL's 63 bytes, cut and suffixed with a hash. */
export function tableName(lens: string): string {
  const name = TABLE_PREFIX + lens;
  if (name.length <= MAX_IDENTIFIER) return name;
  const hash = createHash('sha256').update(lens).digest('hex').slice(0, 12);
  return `${name.slice(0, MAX_IDENTIFIER - hash.length - 1)}_${hash}`;
}

/**
 * The words of a keyword query, for `websearch_to_tsquery`, each matched on its own (OR):
 * a "quoted phrase" stays one term; `-word` or `-"phrase"` excludes; a bare `or` is dropped
 * (terms are OR'ed anyway).
 */
function queryTerms(query: string): { positive: string[]; negative: string[] } {
  const positive: string[] = [];
  const negative: string[] = [];
  for (const token of query.match(/-?"[^"]*"?|[^\s"]+/g) ?? []) {
    if (positive.length + negative.length >= MAX_QUERY_TERMS) break;
    if (token.toLowerCase() === 'or') continue;
    if (token.startsWith('-') && token.length > 1) negative.push(token);
    else positive.push(token);
  }
  return { positive, negative };
}

/** The top-level string values of metadata, as the keyword index reads them. */
function metadataText(metadata: Record<string, unknown>): string {
  return Object.values(metadata)
    .filter((value): value is string => typeof value === 'string')
    .join(' ');
}

/** pgvector's text form. Each float32 converts to the double that reads back as itself. */
function vectorLiteral(vector: Float32Array): string {
  let out = '[';
  for (let i = 0; i < vector.length; i++) {
    if (i > 0) out += ',';
    const x = vector[i];
    out += Object.is(x, -0) ? '-0' : String(x);
  }
  return out + ']';
}

function parseVector(text: string): Float32Array {
  const inner = text.slice(1, -1);
  if (inner === '') return new Float32Array(0);
  return Float32Array.from(inner.split(','), Number);
}



/** PostgreSQL text and jsonb cannot hold U+0000. */
function checkNul(lens: string, id: string, row: { id: string; content: string; metadata: string; hash: string }): void {
  const field = row.id.includes('\0')
    ? 'id'
    : row.content.includes('\0')
      ? 'content'
      : /(^|[^\\])(\\\\)*\\u0000/.test(row.metadata)
        ? 'metadata'
        : row.hash.includes('\0')
          ? 'contentHash'
          : undefined;
  if (field) {
    throw new RecordRejectedError(`Record ${JSON.stringify(id)} of lens ${lens}: its ${field} holds a NUL character (U+0000), which PostgreSQL text cannot store`);
  }
}

/** Ids that can exist (none with NUL). */
function withoutNul(ids: string[]): string[] {
  return ids.filter((id) => !id.includes('\0'));
}

/** `name` as a quoted SQL identifier: `"my ""odd"" schema"`. */
function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
