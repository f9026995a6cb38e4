/**
 * The JSON Schema (draft-07) of Tributary's YAML configuration file: the one spec that drives
 * validation (./load.ts), editor completion (config/tributary.schema.json, written from this
 * file by `npm run schema`) and the reference docs. Every property has a description; every
 * optional property with a fixed default declares it, and the loader fills those defaults in.
 *
 * Two annotation keywords (ignored by editors, read by the loader's error messages):
 * - `x-expected`: what a valid value looks like, in words, for pattern-like checks.
 * - `x-notYetAvailable`: values (or keys) that the design plans but this version does not
 *   implement yet; using one gets "not available in this version yet" instead of a plain
 *   "unknown" error.
 *
 * The `sources` and `sinks` entries come from the plugins' specs (connectors/index.ts,
 * src/sinks/index.ts); ./types.ts derives their types from the same specs.
 */
import { plannedSources, sourceSpecs } from '../../connectors/index.js';
import { plannedSinks, sinkSpecs } from '../sinks/index.js';
import { MAX_BATCH, READ_BATCH } from '../types.js';
import { TABLE_NAME_EXPECTED, TABLE_NAME_PATTERN } from '../table-name.js';
import { DEFAULT_METRICS_LISTEN, IDENTIFIER_EXPECTED, IDENTIFIER_PATTERN, LENS_NAME_PATTERN, LISTEN_PATTERN, columnList, duration, httpUrl, positiveInteger } from './fragments.js';

const source = {
  type: 'object',
  description: 'One connection to a database or change stream. `type` decides the other keys.',
  required: ['type'],
  discriminator: { propertyName: 'type' },
  'x-notYetAvailable': plannedSources,
  oneOf: sourceSpecs.map((spec) => spec.schema),
};

const lens = {
  type: 'object',
  description: 'One index over one table of a source: which rows, which fields, where they go.',
  additionalProperties: false,
  required: ['source', 'table', 'sink'],
  properties: {
    source: { type: 'string', minLength: 1, description: 'Name of the source (a key of `sources`) the table lives in.' },
    table: {
      type: 'string',
      pattern: TABLE_NAME_PATTERN,
      'x-expected': TABLE_NAME_EXPECTED,
      description:
        'The table, as `schema.table`; a bare `table` means `public.table` (MySQL: `database.table`, the database of the source url). ' +
        'A part with spaces, dots or quotes goes in double quotes (Postgres) or backticks (MySQL), a quote inside doubled; ' +
        'an unquoted part is taken as written (no case folding). A partitioned table is named by its root.',
      examples: ['public.products', 'products', '"Sales"."Order Items"'],
    },
    primaryKey: {
      ...columnList("Key columns, in order. Default: the table's primary key, read at start."),
      minItems: 1,
    },
    fields: columnList('Columns whose text is embedded (their values, one a line).', []),
    template: {
      type: 'string',
      minLength: 1,
      description: 'Instead of `fields`: the embedded text as a template with {{column}} placeholders.',
      examples: ['{{name}}: {{description}} ({{category}})'],
    },
    metadata: columnList('Columns stored with each record as metadata (filterable, returned with results).', []),
    payload: {
      description:
        'Payload sinks (seyn, psykhe): the columns sent with each record, as a list of columns or a map ' +
        '`{ outField: column }`. Default: every column of the table.',
      'x-expected': 'a list of column names, or a map of output field to column name',
      oneOf: [
        { ...columnList('Columns sent, under their own names.'), minItems: 1 },
        {
          type: 'object',
          description: 'Output field → column.',
          minProperties: 1,
          additionalProperties: { type: 'string', minLength: 1, description: 'A column name (quotes around it optional).' },
        },
      ],
      examples: [['name', 'stage', 'amount'], { title: 'name', price: 'amount' }],
    },
    entityType: {
      type: 'string',
      minLength: 1,
      description: "seyn: each record's `entityType`. Default: the lens name.",
      examples: ['deal'],
    },
    changeTrackingColumn: {
      type: 'string',
      minLength: 1,
      description: 'A column that grows on every update (e.g. updated_at), for incremental syncs and polling.',
    },
    syncInterval: duration('Run an incremental sync (polling cursor; sees no deletes) this often. Sources with `capture: poll`.'),
    syncOverlap: {
      ...duration(
        'Polling re-reads rows whose changeTrackingColumn (a time) is up to this much older than the saved cursor, ' +
          'so a transaction that commits late with an earlier timestamp is not skipped.',
      ),
      default: '30s',
    },
    smartSyncInterval: duration(
      'Run a full sweep with tombstones this often (any capture mode): upserts rows changed since the last sweep ' +
        'and deletes ids that are no longer in the table.',
    ),
    sink: { type: 'string', minLength: 1, description: 'Name of the sink (a key of `sinks`) batches of this lens go to.' },
    initialSync: {
      type: 'string',
      enum: ['full', 'none'],
      default: 'full',
      description: "What to do on the lens's first start: ask the sink for a full sync, or nothing.",
    },
    maxBatch: {
      type: 'integer',
      minimum: 1,
      maximum: MAX_BATCH,
      default: MAX_BATCH,
      description: `Flush a batch at this many distinct ids (at most ${MAX_BATCH}, the ingest APIs' limit).`,
    },
    maxWaitMs: {
      type: 'integer',
      minimum: 0,
      maximum: 60000,
      default: 200,
      description: 'Flush a batch this long after its first change, in milliseconds.',
    },
    rules: {
      type: 'object',
      additionalProperties: false,
      description: "What the bundled worker's API may do with the lens besides search.",
      properties: {
        query: {
          type: 'boolean',
          default: false,
          description:
            'Serve `POST /v1/query/:lens`: rows of the table read live, filtered by equality on the key, fields and metadata columns, ordered and paged (search and admin keys).',
        },
      },
    },
  },
} as const;

const sink = {
  type: 'object',
  description: 'Where batches of changes go. `type` decides the other keys.',
  required: ['type'],
  discriminator: { propertyName: 'type' },
  'x-notYetAvailable': plannedSinks,
  oneOf: sinkSpecs.map((spec) => spec.schema),
};

const hashEmbedder = {
  type: 'object',
  description: 'Offline, deterministic feature hashing of words and character n-grams: lexical similarity, not meaning.',
  additionalProperties: false,
  properties: {
    type: { const: 'hash', description: 'Embedder type.' },
    dimensions: { type: 'integer', minimum: 8, maximum: 4096, default: 384, description: 'Vector dimensions.' },
  },
} as const;

const openaiEmbedder = {
  type: 'object',
  description: 'Any OpenAI-compatible /v1/embeddings endpoint (OpenAI, Azure, Ollama, vLLM, TEI).',
  additionalProperties: false,
  required: ['type', 'model', 'dimensions'],
  properties: {
    type: { const: 'openai', description: 'Embedder type.' },
    url: httpUrl('https://api.openai.com/v1', 'Base URL; requests go to {url}/embeddings.', 'https://api.openai.com/v1'),
    key: { type: 'string', minLength: 1, description: 'API key (Bearer). Use ${VAR}; never logged.' },
    model: { type: 'string', minLength: 1, description: 'Model name, e.g. text-embedding-3-small.' },
    dimensions: { type: 'integer', minimum: 1, maximum: 16384, description: 'Vector dimensions the model returns.' },
    sendDimensions: { type: 'boolean', default: false, description: 'Send `dimensions` in requests (models that can shorten vectors).' },
    maxInputs: { type: 'integer', minimum: 1, maximum: 2048, default: 256, description: 'Texts per request.' },
    maxTokensPerRequest: { type: 'integer', minimum: 1, default: 250000, description: 'Estimated tokens per request.' },
    maxInputTokens: { type: 'integer', minimum: 1, default: 8191, description: 'Estimated tokens per text.' },
    overLong: { type: 'string', enum: ['truncate', 'reject'], default: 'truncate', description: 'What to do with a text over maxInputTokens.' },
    concurrency: { type: 'integer', minimum: 1, maximum: 64, default: 2, description: 'Requests in flight at once.' },
    timeoutMs: { type: 'integer', minimum: 1, default: 60000, description: 'Per-request timeout, in milliseconds.' },
    maxRetries: { type: 'integer', minimum: 0, default: 6, description: 'Retries of 429, 5xx and network failures.' },
  },
} as const;

const worker = {
  type: 'object',
  description: 'The bundled ingest worker: re-reads rows by id, embeds them, indexes them, serves search.',
  additionalProperties: false,
  default: {},
  properties: {
    listen: {
      type: 'string',
      pattern: LISTEN_PATTERN,
      'x-expected': 'host:port with a port from 0 to 65535',
      description: 'Serve the SemiLayer-compatible HTTP API here (ingest, jobs, status, search, similar). Absent: no HTTP API.',
    },
    embedder: {
      type: 'object',
      description: 'How text becomes vectors. `type` decides the other keys.',
      required: ['type'],
      discriminator: { propertyName: 'type' },
      default: { type: 'hash', dimensions: 384 },
      oneOf: [hashEmbedder, openaiEmbedder],
    },
    index: {
      type: 'object',
      description: 'Where vectors and texts are kept. `type` decides the other keys.',
      required: ['type'],
      discriminator: { propertyName: 'type' },
      default: { type: 'embedded', path: './data/index' },
      properties: { type: { enum: ['embedded', 'pgvector'], default: 'embedded', description: 'Index type.' } },
      oneOf: [
        {
          type: 'object',
          description: 'Files in a local directory: an HNSW graph in memory, records on disk (one replica only).',
          additionalProperties: false,
          properties: {
            type: { const: 'embedded', description: 'Index type.' },
            path: { type: 'string', minLength: 1, default: './data/index', description: "Directory of the index and the worker's queue; relative paths are resolved against the config file's directory." },
            quantization: {
              type: 'string',
              enum: ['f32', 'f16', 'i8'],
              default: 'i8',
              description:
                'How the HNSW graph holds vectors in memory: i8 (1 byte a dimension), f16 (2) or f32 (4). Candidates are scored again from the full-precision vectors on disk, so scores stay exact; f16 and f32 cost memory and insert time for a little recall. A change rebuilds the graph on the next start.',
            },
            connectivity: { type: 'integer', minimum: 4, maximum: 64, default: 16, description: "Links per node of the HNSW graph (HNSW's M): more is better recall, more memory." },
            expansionAdd: { type: 'integer', minimum: 8, maximum: 1024, default: 64, description: "Candidates kept while inserting (HNSW's ef_construction): more is a better graph, slower indexing." },
            expansionSearch: { type: 'integer', minimum: 8, maximum: 1024, default: 64, description: "Candidates kept while searching (HNSW's ef_search): more is better recall, slower searches." },
            exactBelow: { type: 'integer', minimum: 0, default: 10000, description: 'Lenses of at most this many records are searched exactly (a scan in memory), larger ones through the graph.' },
          },
        },
        {
          type: 'object',
          description: 'Tables in a PostgreSQL database with the pgvector extension (0.5+): one table per lens, HNSW and full text indexes.',
          additionalProperties: false,
          required: ['type', 'url'],
          properties: {
            type: { const: 'pgvector', description: 'Index type.' },
            url: { type: 'string', minLength: 1, description: 'libpq connection URL; TLS as for postgres sources (sslmode, sslrootcert, …). Never logged with its password.' },
            schema: {
              type: 'string',
              pattern: IDENTIFIER_PATTERN,
              'x-expected': IDENTIFIER_EXPECTED,
              default: 'tributary',
              description: 'Schema the lens tables (lens_<lens>) live in; created if missing.',
            },
            path: { type: 'string', minLength: 1, default: './data/index', description: "Directory of the worker's local queue; relative paths are resolved against the config file's directory." },
            m: { type: 'integer', minimum: 2, maximum: 100, default: 16, description: "pgvector's HNSW `m` (links per node) for lens tables created from now on." },
            efConstruction: { type: 'integer', minimum: 4, maximum: 1000, default: 64, description: "pgvector's HNSW `ef_construction` for lens tables created from now on; at least twice `m`." },
            efSearch: { type: 'integer', minimum: 1, maximum: 1000, default: 100, description: "pgvector's `hnsw.ef_search` of a search (raised to twice the rows asked for)." },
          },
        },
      ],
    },
    keys: {
      type: 'array',
      default: [],
      description: 'API keys of the HTTP API. Empty: no authentication (local development only).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['key', 'scope'],
        properties: {
          key: { type: 'string', minLength: 8, description: 'The key (Bearer token). Use ${VAR}; never logged.' },
          scope: { type: 'string', enum: ['ingest', 'search', 'admin'], description: 'ingest: ingest and jobs; search: search and similar; admin: all.' },
        },
      },
    },
    maxQueuedChanges: { type: 'integer', minimum: 1, default: 100000, description: 'Per lens: beyond this many queued changes, ingest answers 429.' },
    acknowledge: {
      type: 'string',
      enum: ['queued', 'indexed'],
      default: 'queued',
      description:
        'When the worker sink accepts a batch: `queued` once it is in the local durable queue; `indexed` once it is searchable. ' +
        'Worker replicas reading a kafka bus use `indexed`, so a killed replica leaves its unindexed changes uncommitted on the bus for another replica.',
    },
    readBatch: { type: 'integer', minimum: 1, maximum: MAX_BATCH, default: READ_BATCH, description: 'Rows read, embedded and written per step.' },
  },
} as const;

const state = {
  type: 'object',
  description: 'Where acknowledged positions, lens status and the dead-letter queue are kept.',
  required: ['type'],
  discriminator: { propertyName: 'type' },
  default: { type: 'embedded', path: './data' },
  oneOf: [
    {
      type: 'object',
      description: 'Files in a local directory, for one daemon (a lock file keeps a second process out).',
      additionalProperties: false,
      properties: {
        type: { const: 'embedded', description: 'State type.' },
        path: {
          type: 'string',
          minLength: 1,
          default: './data',
          description: "Directory for the state files; relative paths are resolved against the config file's directory.",
        },
      },
    },
    {
      type: 'object',
      description: 'Tables in a PostgreSQL schema. Replicas share them: one replica reads each source (it holds that source\'s lease, an advisory lock in this database) and the others stand by to take over.',
      additionalProperties: false,
      required: ['url'],
      properties: {
        type: { const: 'postgres', description: 'State type.' },
        url: { type: 'string', minLength: 1, description: 'libpq connection URL; TLS as for postgres sources (sslmode, sslrootcert, …). Never logged with its password.' },
        schema: {
          type: 'string',
          pattern: IDENTIFIER_PATTERN,
          'x-expected': IDENTIFIER_EXPECTED,
          default: 'tributary',
          description: 'Schema the state tables live in; created if missing.',
        },
      },
    },
  ],
} as const;

/** The schema of the whole configuration file. */
export const configSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'Tributary configuration',
  description:
    'One Tributary pipeline: sources to tail, lenses (one index over one table each) and sinks to ' +
    'deliver to. ${VAR} and ${VAR:-default} in values are replaced from the environment ($${ is a literal ${).',
  type: 'object',
  additionalProperties: false,
  required: ['sources', 'lenses', 'sinks'],
  properties: {
    sources: {
      type: 'object',
      description: 'Sources by name.',
      additionalProperties: source,
    },
    lenses: {
      type: 'object',
      description: 'Lenses by name (letters, digits, _ and -, at most 64 characters).',
      minProperties: 1,
      'x-expected': 'at least one lens',
      propertyNames: {
        pattern: LENS_NAME_PATTERN,
        'x-expected': 'a name of letters, digits, _ and - (at most 64 characters)',
      },
      additionalProperties: lens,
    },
    sinks: {
      type: 'object',
      description: 'Sinks by name.',
      additionalProperties: sink,
    },
    state: state,
    worker: worker,
    metrics: {
      type: ['object', 'boolean'],
      description: 'Prometheus metrics endpoint (GET /metrics). `false` turns it off; `true` keeps the defaults.',
      additionalProperties: false,
      default: { listen: DEFAULT_METRICS_LISTEN },
      properties: {
        listen: {
          type: 'string',
          pattern: LISTEN_PATTERN,
          'x-expected': 'host:port with a port from 0 to 65535',
          default: DEFAULT_METRICS_LISTEN,
          description: 'Address to serve metrics on, as host:port.',
        },
      },
    },
    pipeline: {
      type: 'object',
      description: 'Limits shared by every lens.',
      additionalProperties: false,
      default: { maxPendingChanges: 20000, maxPendingBytes: 67108864, drainTimeoutMs: 30000, errorRetryMs: 60000 },
      properties: {
        maxPendingChanges: positiveInteger(20000, 'Pause a source when its lenses buffer this many changes not yet in flight.'),
        maxPendingBytes: positiveInteger(67108864, '…or this many bytes of ids (default 64 MiB).'),
        drainTimeoutMs: positiveInteger(
          30000,
          'On SIGTERM, how long to wait for pending batches before exiting anyway, in milliseconds.',
          0,
        ),
        errorRetryMs: positiveInteger(
          60000,
          'While a lens is in `error` (401/403/404 from its sink), how often its batch is tried again, in milliseconds.',
        ),
      },
    },
    log: {
      type: 'object',
      description: 'Logging (JSON lines on stdout).',
      additionalProperties: false,
      default: { level: 'info' },
      properties: {
        level: {
          type: 'string',
          enum: ['debug', 'info', 'warn', 'error'],
          default: 'info',
          description: 'Least severe level written.',
        },
      },
    },
  },
} as const;

/** The text of config/tributary.schema.json: the schema as pretty JSON with a final newline. */
export function schemaFileText(): string {
  return JSON.stringify(configSchema, null, 2) + '\n';
}
