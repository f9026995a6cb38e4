/**
 * The worker's OpenAPI document (src/worker/openapi.json, served at GET /v1/openapi.json) lists
 * exactly the routes the server answers, and real answers of a running daemon validate against it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parseConfig } from '../src/config/load.js';
import { startDaemon, type Daemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';
import { ROUTES } from '../src/worker/http.js';
import { eventually } from './helpers/daemon.js';
import { startPostgres, freePort, type TestPostgres } from './helpers/postgres.js';

const DOC = JSON.parse(readFileSync(resolve(import.meta.dirname, '../../src/worker/openapi.json'), 'utf8'));
const DOC_ID = 'https://tributary.invalid/openapi.json';
const ajv = new Ajv2020({ strict: false, validateFormats: false });
ajv.addSchema({ ...DOC, $id: DOC_ID });

const INGEST = 'ik_openapi_ingest';
const SEARCH = 'sk_openapi_search';

let pg: TestPostgres;
let daemon: Daemon | undefined;
before(async () => {
  pg = await startPostgres();
});
after(async () => {
  await daemon?.stop();
  await pg?.stop();
});

/** `/v1/ingest/:lens` → `/v1/ingest/{lens}` */
const template = (path: string) => path.replace(/:(\w+)/g, '{$1}');

/** The document's schema for an answer, or undefined when it does not declare that status. */
function responseSchema(path: string, method: string, status: number): Record<string, unknown> | undefined {
  let response = DOC.paths[path]?.[method.toLowerCase()]?.responses?.[String(status)];
  if (response?.$ref) response = DOC.components.responses[response.$ref.split('/').pop()];
  if (!response) return undefined;
  const content = response.content ?? {};
  const schema = content['application/json']?.schema ?? content['text/plain']?.schema;
  return schema?.$ref ? { $ref: DOC_ID + schema.$ref } : schema;
}

describe('OpenAPI document', () => {
  test('lists exactly the routes the worker answers, each with its parameters', () => {
    const served = ROUTES.map((r) => `${r.method} ${template(r.path)}`).sort();
    const documented = Object.entries(DOC.paths)
      .filter(([path]) => path.startsWith('/v1/'))
      .flatMap(([path, item]) => Object.keys(item as object).filter((k) => ['get', 'post', 'put', 'patch', 'delete'].includes(k)).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    assert.deepEqual(documented, served);
    for (const r of ROUTES) {
      const params = (DOC.paths[template(r.path)][r.method.toLowerCase()].parameters ?? []).map((p: { name: string }) => p.name);
      assert.deepEqual(params, [...r.path.matchAll(/:(\w+)/g)].map((m) => m[1]), `${r.method} ${r.path} parameters`);
    }
    // The daemon's own endpoints are documented too.
    for (const path of ['/healthz', '/readyz', '/metrics']) assert.ok(DOC.paths[path]?.get, path);
  });

  test('answers of a running daemon validate against the document', async () => {
    const db = await pg.createDatabase('openapi');
    await pg.query(db, `CREATE TABLE products (id int PRIMARY KEY, name text, description text)`);
    await pg.query(db, `INSERT INTO products VALUES (1, 'Summit boot', 'waterproof hiking boots'), (2, 'Trail runner', 'light running shoes')`);
    const [api, metrics] = [await freePort(), await freePort()];
    const data = mkdtempSync(join(tmpdir(), 'tributary-openapi-'));
    const config = parseConfig(
      `sources:
  app: { type: postgres, url: "${db}", slot: openapi, publication: openapi }
lenses:
  products: { source: app, table: products, fields: [name, description], metadata: [id, name], sink: local, rules: { query: true } }
sinks:
  local: { type: worker }
worker:
  listen: 127.0.0.1:${api}
  index: { type: embedded, path: ${data}/index }
  keys: [{ key: ${INGEST}, scope: ingest }, { key: ${SEARCH}, scope: search }]
state: { type: embedded, path: ${data} }
metrics: { listen: 127.0.0.1:${metrics} }
`,
      join(data, 'tributary.yaml'),
    );
    daemon = await startDaemon(config, createLogger({ level: 'fatal' }));
    await daemon.started;

    const answered = new Set<string>();
    /** Sends a request, checks the document declares its status and that the body validates. */
    async function call(docPath: string, method: string, path: string, options: { key?: string; body?: unknown; port?: number } = {}) {
      const res = await fetch(`http://127.0.0.1:${options.port ?? api}${path}`, {
        method,
        headers: options.key ? { authorization: `Bearer ${options.key}` } : {},
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
      });
      const text = await res.text();
      const schema = responseSchema(docPath, method, res.status);
      assert.ok(schema, `${method} ${docPath} answered ${res.status}, which the document does not declare: ${text}`);
      const body: any = res.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : text;
      const validate = ajv.compile(schema);
      assert.ok(validate(structuredClone(body)), `${method} ${path} ${res.status}: ${JSON.stringify(validate.errors)}\n${text.slice(0, 500)}`);
      answered.add(`${method} ${docPath}`);
      return { status: res.status, body };
    }

    const served = await call('/v1/openapi.json', 'GET', '/v1/openapi.json');
    assert.deepEqual(served.body, DOC, 'the worker serves the document in the repo, without a key');

    const ingested = await call('/v1/ingest/{lens}', 'POST', '/v1/ingest/products', { key: INGEST, body: { mode: 'records', changes: [{ id: '1', action: 'upsert' }] } });
    assert.equal(ingested.status, 202);
    assert.equal((await call('/v1/jobs/{jobId}', 'GET', `/v1/jobs/${ingested.body.jobId}`, { key: INGEST })).status, 200);
    assert.equal((await call('/v1/jobs/{jobId}', 'GET', '/v1/jobs/nope', { key: INGEST })).status, 404);
    assert.equal((await call('/v1/ingest/{lens}', 'POST', '/v1/ingest/products', { key: INGEST, body: { mode: 'sideways' } })).status, 400);
    assert.equal((await call('/v1/ingest/{lens}', 'POST', '/v1/ingest/products', { key: SEARCH, body: { mode: 'full' } })).status, 403);
    assert.equal((await call('/v1/ingest/{lens}', 'POST', '/v1/ingest/products', { body: { mode: 'full' } })).status, 401);
    assert.equal((await call('/v1/ingest/{lens}', 'POST', '/v1/ingest/nope', { key: INGEST, body: { mode: 'full' } })).status, 404);
    const tooMany = Array.from({ length: 10_001 }, (_, i) => ({ id: String(i), action: 'upsert' }));
    assert.equal((await call('/v1/ingest/{lens}', 'POST', '/v1/ingest/products', { key: INGEST, body: { mode: 'records', changes: tooMany } })).status, 413);

    assert.equal((await call('/v1/status', 'GET', '/v1/status', { key: SEARCH })).status, 200);
    assert.equal((await call('/v1/status/{lens}', 'GET', '/v1/status/products', { key: SEARCH })).status, 200);
    assert.equal((await call('/v1/status/{lens}', 'GET', '/v1/status/nope', { key: SEARCH })).status, 404);

    const search = () => call('/v1/search/{lens}', 'POST', '/v1/search/products', { key: SEARCH, body: { query: 'hiking boots', limit: 2, mode: 'hybrid' } });
    await eventually(async () => (await search()).body.results.length === 2, 'both products searchable', 20_000);
    assert.equal((await call('/v1/search/{lens}', 'POST', '/v1/search/products', { key: SEARCH, body: { query: '' } })).status, 400);
    assert.equal((await call('/v1/similar/{lens}', 'POST', '/v1/similar/products', { key: SEARCH, body: { id: '1' } })).status, 200);
    assert.equal((await call('/v1/similar/{lens}', 'POST', '/v1/similar/products', { key: SEARCH, body: { id: '999' } })).status, 404);

    const rows = await call('/v1/query/{lens}', 'POST', '/v1/query/products', { key: SEARCH, body: { orderBy: { field: 'name' }, limit: 1 } });
    assert.deepEqual(rows.body.rows, [{ id: 1, name: 'Summit boot', description: 'waterproof hiking boots' }]);
    const next = await call('/v1/query/{lens}', 'POST', '/v1/query/products', { key: SEARCH, body: { orderBy: { field: 'name' }, limit: 1, cursor: rows.body.meta.nextCursor } });
    assert.deepEqual([next.body.rows[0].id, next.body.meta.nextCursor, next.body.meta.total], [2, null, 2]);
    assert.equal((await call('/v1/query/{lens}', 'POST', '/v1/query/products', { key: SEARCH, body: { where: { secret: 1 } } })).status, 400);
    assert.equal((await call('/v1/query/{lens}', 'POST', '/v1/query/products', { key: INGEST, body: {} })).status, 403);

    assert.equal((await call('/v1/dlq/{lens}', 'GET', '/v1/dlq/products', { key: INGEST })).status, 200);
    assert.equal((await call('/v1/dlq/{lens}', 'POST', '/v1/dlq/products', { key: INGEST, body: { action: 'replay' } })).status, 200);
    assert.equal((await call('/v1/dlq/{lens}', 'POST', '/v1/dlq/products', { key: INGEST, body: { action: 'undo' } })).status, 400);

    for (const path of ['/healthz', '/readyz', '/metrics']) assert.equal((await call(path, 'GET', path, { port: metrics })).status, 200);
    // Every documented operation was exercised.
    const documented = Object.entries(DOC.paths).flatMap(([path, item]) => Object.keys(item as object).filter((k) => k === 'get' || k === 'post').map((m) => `${m.toUpperCase()} ${path}`));
    assert.deepEqual(documented.filter((op) => !answered.has(op)), []);
  });
});
