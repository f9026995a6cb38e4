import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, parseConfig } from '../src/config/load.js';
import { schemaFileText } from '../src/config/schema.js';
import { ConfigError } from '../src/errors.js';

const root = fileURLToPath(new URL('../../', import.meta.url)); // dist/test/ → repository root
const FILE = '/etc/tributary/pipeline.yaml';

/** A small valid file; tests replace or append lines. Line numbers matter: keep it stable. */
const MINIMAL = [
  'sources:', //                                              1
  '  app:', //                                                2
  '    type: postgres', //                                    3
  '    url: postgres://tributary:pgsecret@db:5432/shop', //   4
  'lenses:', //                                               5
  '  products:', //                                           6
  '    source: app', //                                       7
  '    table: products', //                                   8
  '    sink: hosted', //                                      9
  'sinks:', //                                                10
  '  hosted:', //                                             11
  '    type: semilayer', //                                   12
  '    url: https://api.semilayer.com/', //                   13
  '    key: ik_topsecret', //                                 14
];

const yaml = (...lines: string[]) => lines.join('\n') + '\n';

/** The problems a text is rejected with (fails the test when it is accepted). */
function problems(text: string, env: NodeJS.ProcessEnv = {}): ConfigError['problems'] {
  try {
    parseConfig(text, FILE, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.file, FILE);
    return err.problems;
  }
  assert.fail('expected the configuration to be rejected');
}

/** MINIMAL with line `n` (1-based) replaced by `replacement` (any number of lines). */
function withLine(n: number, ...replacement: string[]): string {
  const lines = [...MINIMAL];
  lines.splice(n - 1, 1, ...replacement);
  return yaml(...lines);
}

test('a minimal file gets every default', () => {
  const config = parseConfig(yaml(...MINIMAL), FILE, {});
  assert.deepEqual(config, {
    sources: {
      app: {
        type: 'postgres',
        url: 'postgres://tributary:pgsecret@db:5432/shop',
        capture: 'logical',
        slot: 'tributary_app',
        publication: 'tributary_app',
        statusIntervalMs: 10000,
        installTriggers: true,
        triggerSchema: 'tributary',
        failoverSlot: false,
      },
    },
    lenses: {
      products: {
        source: 'app',
        table: 'public.products',
        fields: [],
        metadata: [],
        sink: 'hosted',
        syncOverlap: '30s',
        initialSync: 'full',
        maxBatch: 10000,
        maxWaitMs: 200,
      },
    },
    sinks: { hosted: { type: 'semilayer', url: 'https://api.semilayer.com', key: 'ik_topsecret', timeoutMs: 30000 } },
    state: { type: 'embedded', path: '/etc/tributary/data' },
    metrics: { listen: '0.0.0.0:9464' },
    pipeline: { maxPendingChanges: 20000, maxPendingBytes: 67108864, drainTimeoutMs: 30000, errorRetryMs: 60000 },
    log: { level: 'info' },
    worker: null,
  });
});

test('explicit values are kept; metrics: false disables metrics; postgres state gets its schema default', () => {
  const config = parseConfig(
    yaml(
      ...MINIMAL,
      'state: { type: postgres, url: postgres://db/state }',
      'metrics: false',
      'log: { level: debug }',
      'pipeline: { drainTimeoutMs: 0 }',
    ),
    FILE,
    {},
  );
  assert.deepEqual(config.state, { type: 'postgres', url: 'postgres://db/state', schema: 'tributary' });
  assert.equal(config.metrics, null);
  assert.equal(config.log.level, 'debug');
  assert.deepEqual(config.pipeline, { maxPendingChanges: 20000, maxPendingBytes: 67108864, drainTimeoutMs: 0, errorRetryMs: 60000 });

  const lens = parseConfig(withLine(8, '    table: inventory.items', '    primaryKey: [sku, region]'), FILE, {}).lenses.products;
  assert.equal(lens.table, 'inventory.items');
  assert.deepEqual(lens.primaryKey, ['sku', 'region']);
});

test('a relative embedded state path is resolved against the config file directory', () => {
  assert.deepEqual(parseConfig(yaml(...MINIMAL, 'state: { type: embedded, path: ../var/state }'), FILE, {}).state, {
    type: 'embedded',
    path: '/etc/var/state',
  });
  assert.deepEqual(parseConfig(yaml(...MINIMAL, 'state: { type: embedded }'), FILE, {}).state, {
    type: 'embedded',
    path: '/etc/tributary/data',
  });
  assert.deepEqual(parseConfig(yaml(...MINIMAL, 'state: { type: embedded, path: /srv/state }'), FILE, {}).state, {
    type: 'embedded',
    path: '/srv/state',
  });
});

test('unknown keys are errors, at the top level and nested, with what was expected', () => {
  assert.deepEqual(problems(yaml(...MINIMAL, 'metricz: {}')), [
    {
      path: 'metricz',
      line: 15,
      message: 'unknown key "metricz"; expected one of: sources, lenses, sinks, state, worker, metrics, pipeline, log',
    },
  ]);
  assert.deepEqual(problems(withLine(9, '    sink: hosted', '    feilds: [name]')), [
    {
      path: 'lenses.products.feilds',
      line: 10,
      message:
        'unknown key "feilds"; expected one of: source, table, primaryKey, fields, template, metadata, payload, entityType, changeTrackingColumn, ' +
        'syncInterval, syncOverlap, smartSyncInterval, sink, initialSync, maxBatch, maxWaitMs, rules',
    },
  ]);
});

test('wrong types say what was expected and what was found', () => {
  assert.deepEqual(problems(withLine(9, '    sink: hosted', '    maxBatch: abc')), [
    { path: 'lenses.products.maxBatch', line: 10, message: 'expected integer, got string "abc"' },
  ]);
  assert.deepEqual(problems(withLine(9, '    sink: hosted', '    fields: name')), [
    { path: 'lenses.products.fields', line: 10, message: 'expected list, got string "name"' },
  ]);
});

test('enums list the allowed values', () => {
  assert.deepEqual(problems(withLine(3, '    type: postgres', '    capture: wal')), [
    { path: 'sources.app.capture', line: 4, message: 'expected one of: logical, trigger, poll, auto; got "wal"' },
  ]);
  assert.deepEqual(problems(withLine(12, '    type: elastic')), [
    { path: 'sinks.hosted.type', line: 12, message: 'expected one of: semilayer, worker, seyn, psykhe, kafka; got "elastic"' },
  ]);
  assert.deepEqual(problems(yaml(...MINIMAL, 'worker:', '  index: { type: pgvector }')), [
    { path: 'worker.index.url', line: 16, message: 'missing required key "url"' },
  ]);
});

test('missing required keys point at the map that lacks them', () => {
  assert.deepEqual(problems(withLine(13, '    timeoutMs: 5000')), [
    { path: 'sinks.hosted.url', line: 11, message: 'missing required key "url"' },
  ]);
  assert.deepEqual(problems(yaml('sources: {}', 'sinks: {}')), [
    { path: 'lenses', line: 1, message: 'missing required key "lenses"' },
  ]);
});

test('maxBatch is at most 10000', () => {
  assert.deepEqual(problems(withLine(9, '    sink: hosted', '    maxBatch: 20000')), [
    { path: 'lenses.products.maxBatch', line: 10, message: 'expected at most 10000, got 20000' },
  ]);
});

test('names, durations and listen addresses are checked', () => {
  assert.deepEqual(
    problems(withLine(6, '  "bad name":')).map((p) => `${p.path}@${p.line}: ${p.message}`),
    ['lenses.bad name@6: invalid name "bad name"; expected a name of letters, digits, _ and - (at most 64 characters)'],
  );
  assert.deepEqual(problems(withLine(9, '    sink: hosted', '    syncInterval: 5 minutes')), [
    {
      path: 'lenses.products.syncInterval',
      line: 10,
      message: 'expected a duration like 30s, 5m, 24h or 1h30m, got "5 minutes"',
    },
  ]);
  assert.deepEqual(problems(yaml(...MINIMAL, 'metrics: { listen: "0.0.0.0:70000" }')), [
    {
      path: 'metrics.listen',
      line: 15,
      message: 'expected host:port with a port from 0 to 65535, got "0.0.0.0:70000"',
    },
  ]);
  assert.deepEqual(problems(withLine(2, '  App-1:')).map((p) => `${p.path}@${p.line}: ${p.message}`), [
    'sources.App-1.slot@2: the default slot name "tributary_App-1" (from the source name) is not a valid identifier; ' +
      'set slot: explicitly (lowercase letters, digits and _, at most 63 characters)',
    'sources.App-1.publication@2: the default publication name "tributary_App-1" (from the source name) is not a valid ' +
      'identifier; set publication: explicitly (lowercase letters, digits and _, at most 63 characters)',
    'lenses.products.source@7: unknown source "app"; defined sources: App-1',
  ]);
  const explicit = parseConfig(
    withLine(2, '  App-1:', '    slot: app_slot', '    publication: app_pub').replace('source: app', 'source: App-1'),
    FILE,
    {},
  );
  assert.equal((explicit.sources['App-1'] as { slot?: string }).slot, 'app_slot');
});

test('lenses must name a defined source and sink', () => {
  assert.deepEqual(problems(withLine(7, '    source: db2')), [
    { path: 'lenses.products.source', line: 7, message: 'unknown source "db2"; defined sources: app' },
  ]);
  assert.deepEqual(problems(withLine(9, '    sink: local')), [
    { path: 'lenses.products.sink', line: 9, message: 'unknown sink "local"; defined sinks: hosted' },
  ]);
  assert.deepEqual(problems(yaml(...MINIMAL.slice(0, 4), 'lenses: {}', ...MINIMAL.slice(9))), [
    { path: 'lenses', line: 5, message: 'expected at least one lens, got an empty map' },
  ]);
});

test('every problem is reported at once, in file order', () => {
  const text = yaml(
    'sources:', //                          1
    '  app:', //                            2
    '    type: postgres', //                3
    '    capture: wal', //                  4
    'lenses:', //                           5
    '  products:', //                       6
    '    source: app', //                   7
    '    table: products', //               8
    '    maxWaitMs: -1', //                 9
    'sinks:', //                            10
    '  hosted: { type: semilayer, url: ftp://x, key: "" }', // 11
    'colour: blue', //                      12
  );
  assert.deepEqual(
    problems(text).map((p) => `${p.line} ${p.path}: ${p.message}`),
    [
      '2 sources.app.url: missing required key "url"',
      '4 sources.app.capture: expected one of: logical, trigger, poll, auto; got "wal"',
      '6 lenses.products.sink: missing required key "sink"',
      '9 lenses.products.maxWaitMs: expected at least 0, got -1',
      '11 sinks.hosted.url: expected an http(s) URL like https://api.semilayer.com, got "ftp://x"',
      '11 sinks.hosted.key: expected a non-empty string',
      '12 colour: unknown key "colour"; expected one of: sources, lenses, sinks, state, worker, metrics, pipeline, log',
    ],
  );
});

test('${VAR} and ${VAR:-default} are interpolated in values; $${ is a literal', () => {
  const text = withLine(4, '    url: postgres://tributary:${PGPASSWORD}@${PGHOST:-localhost}:5432/shop')
    .replace('key: ik_topsecret', 'key: ${INGEST_KEY}')
    // (a replacer function: in a replacement string, `$$` would mean `$`)
    .replace('    sink: hosted', () => '    sink: hosted\n    maxBatch: ${BATCH:-500}\n    changeTrackingColumn: "$${not_a_var}"');
  const config = parseConfig(text, FILE, { PGPASSWORD: 'pw', INGEST_KEY: 'ik_env', PGHOST: '' });
  assert.equal(config.sources.app.type === 'postgres' && config.sources.app.url, 'postgres://tributary:pw@localhost:5432/shop');
  assert.equal(config.sinks.hosted.type === 'semilayer' && config.sinks.hosted.key, 'ik_env');
  assert.equal(config.lenses.products.maxBatch, 500); // unquoted: re-typed as a number
  assert.equal(config.lenses.products.changeTrackingColumn, '${not_a_var}');
});

test('an unset variable without default names the variable, its path and line', () => {
  assert.deepEqual(problems(withLine(4, '    url: ${DATABASE_URL}')), [
    {
      path: 'sources.app.url',
      line: 4,
      message: 'environment variable DATABASE_URL is not set and ${DATABASE_URL} has no default; set it or write ${DATABASE_URL:-default}',
    },
  ]);
});

test('interpolated values cannot inject YAML structure', () => {
  const text = withLine(9, '    sink: hosted', '    changeTrackingColumn: ${COLUMN}');
  const config = parseConfig(text, FILE, { COLUMN: 'updated_at\n    maxBatch: 1' });
  assert.equal(config.lenses.products.changeTrackingColumn, 'updated_at\n    maxBatch: 1');
  assert.equal(config.lenses.products.maxBatch, 10000);
  assert.deepEqual(problems(withLine(7, '    source: ${SRC}'), { SRC: 'app\n  evil: true' }), [
    { path: 'lenses.products.source', line: 7, message: 'unknown source "***"; defined sources: app' },
  ]);
});

test('secrets never appear in errors', () => {
  const leaked = (list: ConfigError['problems'], ...secrets: string[]) => {
    const text = JSON.stringify(list) + new ConfigError(FILE, list).message;
    for (const secret of secrets) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
  };
  // A value from the environment.
  const fromEnv = problems(withLine(9, '    sink: hosted', '    maxBatch: ${BATCH}'), { BATCH: 'hunter2' });
  assert.deepEqual(fromEnv, [{ path: 'lenses.products.maxBatch', line: 10, message: 'expected integer, got string "***"' }]);
  // A sink key of the wrong type, and a URL with a password.
  const inFile = problems(
    yaml(...MINIMAL.slice(0, 12), '    url: https://user:urlsecret@api.semilayer.com:badport x', '    key: [ik_topsecret]'),
  );
  assert.deepEqual(inFile, [
    {
      path: 'sinks.hosted.url',
      line: 13,
      message: 'expected an http(s) URL like https://api.semilayer.com, got "https://user:***@api.semilayer.com:badport x"',
    },
    { path: 'sinks.hosted.key', line: 14, message: 'expected string, got a list' },
  ]);
  leaked(inFile, 'urlsecret', 'ik_topsecret');
  leaked(problems(withLine(14, '    key: 12345678')), '12345678');
});

test('a worker section without a worker sink is an error that says what to add', () => {
  assert.deepEqual(problems(yaml(...MINIMAL, 'worker:', '  listen: 127.0.0.1:8080')), [
    {
      path: 'worker.listen',
      line: 16,
      message: 'the bundled worker serves only lenses whose sink has type: worker, and no sink has; add a sink { type: worker } or remove the worker section',
    },
  ]);
});

test('YAML syntax errors carry their line; an empty file says so', () => {
  assert.deepEqual(problems(yaml('sources:', '  app: { type: postgres', 'lenses: {}')), [
    { path: '(yaml)', line: 2, message: 'YAML syntax error: the "{" at line 2, column 8 is never closed; add the matching "}"' },
  ]);
  // A file that ends inside a bracket: the bracket's line and column, not the line after the end.
  assert.deepEqual(problems(yaml(...MINIMAL.slice(0, 9), '    fields: [name, description')), [
    { path: '(yaml)', line: 10, message: 'YAML syntax error: the "[" at line 10, column 13 is never closed; add the matching "]"' },
  ]);
  assert.deepEqual(problems(yaml(...MINIMAL.slice(0, 4), '    type: postgres')), [
    { path: '(yaml)', line: 5, message: 'YAML syntax error: Map keys must be unique' },
  ]);
  const empty = { path: '(file)', message: 'the file is empty; expected a map with sources, lenses and sinks' };
  assert.deepEqual(problems(''), [empty]);
  assert.deepEqual(problems('# nothing but a comment\n'), [empty]);
});

test('loadConfig reads a file, and says so when it cannot', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-config-'));
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(file, yaml(...MINIMAL));
  assert.deepEqual(loadConfig(file, {}).state, { type: 'embedded', path: join(dir, 'data') });

  const missing = join(dir, 'nope.yaml');
  assert.throws(
    () => loadConfig(missing, {}),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.file === missing &&
      err.problems[0].message === 'cannot read the configuration file: the file does not exist',
  );
});

test('config/example.yaml is valid', () => {
  const config = loadConfig(join(root, 'config/example.yaml'), {
    DATABASE_URL: 'postgres://tributary:secret@db:5432/shop',
    SEMILAYER_INGEST_KEY: 'ik_example',
  });
  assert.equal(config.sources.app.type === 'postgres' && config.sources.app.url, 'postgres://tributary:secret@db:5432/shop');
  assert.equal(config.sinks.hosted.type === 'semilayer' && config.sinks.hosted.url, 'https://api.semilayer.com');
  assert.equal(config.lenses.products.table, 'public.products');
  assert.equal(config.state.type === 'embedded' && config.state.path, join(root, 'config/data'));
});

test('the quick start files are valid: the worker on embedded defaults, the hosted sink, and MySQL', () => {
  const env = { DATABASE_URL: 'postgres://me@localhost/shop', SEMILAYER_INGEST_KEY: 'ik_x' };
  const quickstart = loadConfig(join(root, 'config/quickstart.yaml'), env);
  assert.deepEqual(quickstart.sinks.local, { type: 'worker' });
  assert.equal(quickstart.worker?.listen, '127.0.0.1:8080');
  assert.deepEqual(quickstart.worker?.embedder, { type: 'hash', dimensions: 384 });
  assert.equal(quickstart.worker?.index.path, join(root, 'config/data/index'));
  const hosted = loadConfig(join(root, 'config/semilayer.yaml'), env);
  assert.equal(hosted.sinks.semilayer.type === 'semilayer' && hosted.sinks.semilayer.key, 'ik_x');
  assert.equal(hosted.worker, null);
  const mysql = loadConfig(join(root, 'config/mysql.yaml'), { MYSQL_URL: 'mysql://me:pw@db:3306/shop' });
  assert.equal(mysql.sources.shop.type === 'mysql' && mysql.sources.shop.capture, 'binlog');
  assert.equal(mysql.lenses.products.table, 'shop.products');
  assert.equal(mysql.lenses.products.smartSyncInterval, '24h');
  const kinesis = loadConfig(join(root, 'config/kinesis.yaml'), { SEMILAYER_INGEST_KEY: 'ik_x' });
  const stream = kinesis.sources['orders-stream'];
  assert.deepEqual(stream.type === 'kinesis' && [stream.stream, stream.region, stream.format, stream.startAt, stream.pollIntervalMs], ['dms-shop', 'eu-west-1', 'dms', 'trim_horizon', 1000]);
  assert.deepEqual(kinesis.lenses['order-lines'].primaryKey, ['order_id', 'line_no']);
});

test('lenses of a kinesis source need primaryKey, and read no tables (no polling, no sweeps)', () => {
  const source = 'sources:\n  app: { type: kinesis, stream: s, region: eu-west-1 }\n';
  const sinks = 'sinks:\n  hosted: { type: semilayer, url: https://api.semilayer.com, key: ik_x }\n';
  const bare = `${source}lenses:\n  products: { source: app, table: products, sink: hosted }\n${sinks}`;
  assert.throws(() => parseConfig(bare, FILE, {}), (err: ConfigError) => /lenses\.products\.primaryKey.*kinesis stream.*set primaryKey/.test(err.message));
  const swept = `${source}lenses:\n  products: { source: app, table: products, primaryKey: [id], smartSyncInterval: 1h, sink: hosted }\n${sinks}`;
  assert.throws(() => parseConfig(swept, FILE, {}), (err: ConfigError) => /lenses\.products\.smartSyncInterval.*reads no tables/.test(err.message));
  const good = parseConfig(`${source}lenses:\n  products: { source: app, table: products, primaryKey: [id], sink: hosted }\n${sinks}`, FILE, {});
  assert.equal(good.lenses.products.table, 'public.products');
});

test('a stream source cannot feed a sink that reads the table; a seyn lens on one skips the initial full sync', () => {
  const source = 'sources:\n  app: { type: kinesis, stream: s, region: eu-west-1 }\n';
  const lens = (sink: string, extra = '') => `lenses:\n  products: { source: app, table: products, primaryKey: [id], sink: ${sink}${extra} }\n`;
  const sinks = 'sinks:\n  local: { type: worker }\n  seyn: { type: seyn, url: https://api.seynlabs.com, key: sk_x, sourceId: b6f1c0de-1f2a-4c3b-9d4e-5a6b7c8d9e0f }\n';
  assert.throws(() => parseConfig(`${source}${lens('local')}${sinks}`, FILE, {}), (err: ConfigError) => /lenses\.products\.sink .*"local" \(worker\) reads the lens's table.*kinesis stream/.test(err.message));
  assert.throws(() => parseConfig(`${source}${lens('seyn')}${sinks}`, FILE, {}), (err: ConfigError) => /lenses\.products\.initialSync .*set initialSync: none/.test(err.message));
  assert.equal(parseConfig(`${source}${lens('seyn', ', initialSync: none')}${sinks}`, FILE, {}).lenses.products.initialSync, 'none');
});

test('lenses of a kafka source take no smart sync sweeps: every replica in the group reads the source', () => {
  const source = 'sources:\n  bus: { type: kafka, brokers: ["k:9092"], topics: [t], groupId: g, format: tributary, rowsFrom: "postgres://db/app" }\n';
  const sinks = 'sinks:\n  local: { type: worker }\n';
  const lens = (extra: string) => `lenses:\n  products: { source: bus, table: products, sink: local, initialSync: none${extra} }\n`;
  assert.throws(() => parseConfig(`${source}${lens(', smartSyncInterval: 1h')}${sinks}`, FILE, {}), (err: ConfigError) => /lenses\.products\.smartSyncInterval .*every replica of its consumer group.*remove smartSyncInterval/.test(err.message));
  assert.equal(parseConfig(`${source}${lens('')}${sinks}`, FILE, {}).lenses.products.table, 'public.products');
});

test('a kafka sink sending rows (payload) on a stream whose changes may carry none needs a database to read them from', () => {
  const sinks = 'sinks:\n  bus: { type: kafka, brokers: ["k:9092"], topic: out }\n';
  const lens = (payload: string) => `lenses:\n  products: { source: app, table: products, primaryKey: [id], sink: bus, initialSync: none${payload} }\n`;
  const kafka = (extra: string) => `sources:\n  app: { type: kafka, brokers: ["k:9092"], topics: [t], groupId: g${extra} }\n`;
  assert.throws(
    () => parseConfig(`${kafka(', format: tributary')}${lens(', payload: [id, name]')}${sinks}`, FILE, {}),
    (err: ConfigError) => /lenses\.products\.payload .*sends each change's row.*kafka stream whose changes may carry none; give the source the database the rows are in \(a kafka source's rowsFrom\)/.test(err.message),
  );
  for (const source of [kafka(', format: tributary, rowsFrom: "postgres://db/app"'), kafka(', format: debezium'), 'sources:\n  app: { type: kinesis, stream: s, region: eu-west-1 }\n']) {
    assert.deepEqual(parseConfig(`${source}${lens(', payload: [id, name]')}${sinks}`, FILE, {}).lenses.products.payload, ['id', 'name']);
  }
  assert.equal(parseConfig(`${kafka(', format: tributary')}${lens('')}${sinks}`, FILE, {}).lenses.products.sink, 'bus', 'ids only: no row to read');
});

test('config/tributary.schema.json is the generated schema (run `npm run schema` after editing schema.ts)', () => {
  assert.equal(readFileSync(join(root, 'config/tributary.schema.json'), 'utf8'), schemaFileText());
});

test('a worker sink gets the worker defaults: hash embedder, embedded index beside the config, no keys', () => {
  const config = parseConfig(
    yaml(...MINIMAL.map((line) => (line === '    type: semilayer' ? '    type: worker' : line)).filter((l) => !/^\s+(url: https|key:)/.test(l))),
    FILE,
  );
  assert.deepEqual(config.sinks.hosted, { type: 'worker' });
  assert.deepEqual(config.worker, {
    embedder: { type: 'hash', dimensions: 384 },
    index: { type: 'embedded', path: '/etc/tributary/data/index', quantization: 'i8', connectivity: 16, expansionAdd: 64, expansionSearch: 64, exactBelow: 10000 },
    keys: [],
    maxQueuedChanges: 100000,
    acknowledge: 'queued',
    readBatch: 1000,
  });
});

test('lenses of a capture: poll source need changeTrackingColumn and syncInterval', () => {
  assert.deepEqual(problems(withLine(4, '    url: postgres://db/shop', '    capture: poll')), [
    {
      path: 'lenses.products.changeTrackingColumn',
      line: 7,
      message: 'source "app" has capture: poll, so this lens needs changeTrackingColumn (a column every write moves forward, e.g. updated_at)',
    },
    { path: 'lenses.products.syncInterval', line: 7, message: 'source "app" has capture: poll, so this lens needs syncInterval (how often to poll, e.g. 5m)' },
  ]);
  const config = parseConfig(withLine(9, '    sink: hosted', '    changeTrackingColumn: updated_at', '    syncInterval: 5m').replace('    url: postgres://tributary:pgsecret@db:5432/shop', '    url: postgres://db/shop\n    capture: poll'), FILE, {});
  assert.equal(config.sources.app.type === 'postgres' && config.sources.app.capture, 'poll');
  assert.equal(config.lenses.products.syncOverlap, '30s', 'the overlap default');
});
