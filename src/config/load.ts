/**
 * Turns a YAML configuration file into a validated Config (./types.ts), or throws one
 * ConfigError listing every problem found, each with its YAML path and line, in file order.
 *
 * Steps: parse the YAML (syntax errors stop here) → interpolate `${VAR}` in scalar values →
 * validate against the JSON Schema (./schema.ts), which also fills in defaults → check what a
 * schema cannot (lens → source/sink references, derived names) → build the Config.
 */
import { columnName } from '../table-name.js';
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, Parser, type Document } from 'yaml';
import { ConfigError } from '../errors.js';
import { redactUrl } from '../log.js';
import { sourceSpec, sourceSpecs } from '../../connectors/index.js';
import { forLens, readsTables, type ReadsTable, type SourceSpec } from '../plugins.js';
import { sinkSpec, sinkSpecs } from '../sinks/index.js';
import { DEFAULT_METRICS_LISTEN } from './fragments.js';
import { configSchema } from './schema.js';
import type { Config, LensConfig, SinkConfig, SourceConfig, StateConfig, WorkerConfig } from './types.js';

type Problem = ConfigError['problems'][number];
type Segment = string | number;

/**
 * Reads and parses a configuration file. A missing or unreadable file, like any other
 * problem, is a ConfigError.
 */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'the file does not exist' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message;
    throw new ConfigError(file, [{ path: '(file)', message: `cannot read the configuration file: ${why}` }]);
  }
  return parseConfig(text, file, env);
}

/**
 * Parses configuration text. `file` names the file in errors and anchors relative paths
 * (the embedded state directory); `env` supplies `${VAR}` values.
 */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    // Only the first: the parser's later errors are mostly echoes of it. A bracket never
    // closed is reported where it opened (the parser notices only where the file goes on).
    const [e] = doc.errors;
    const open = unclosedFlow(text);
    if (open) {
      const at = lines.linePos(open.offset);
      const close = open.source === '[' ? ']' : '}';
      const message = `YAML syntax error: the "${open.source}" at line ${at.line}, column ${at.col} is never closed; add the matching "${close}"`;
      throw new ConfigError(file, [{ path: '(yaml)', line: at.line, message }]);
    }
    const message =
      e.code === 'MULTIPLE_DOCS'
        ? 'the file holds more than one YAML document (---); keep the whole configuration in one'
        : `YAML syntax error: ${e.message}`;
    throw new ConfigError(file, [{ path: '(yaml)', line: lines.linePos(e.pos[0]).line, message }]);
  }
  if (doc.contents === null) {
    throw new ConfigError(file, [{ path: '(file)', message: 'the file is empty; expected a map with sources, lenses and sinks' }]);
  }

  const ctx: Context = { doc, lines, data: undefined, fromEnv: new Set(), unresolved: new Set() };
  const envProblems = interpolate(ctx, env);
  ctx.data = doc.toJS();
  let problems = [...schemaProblems(ctx), ...referenceProblems(ctx, ctx.data)];
  // A broken ${...} left an empty string behind: it is reported once, not also as, say, "expected a non-empty string".
  problems = [...envProblems, ...problems.filter((p) => !ctx.unresolved.has(p.path))];
  if (problems.length > 0) {
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0)); // stable: problems on one line keep their order
    throw new ConfigError(file, problems);
  }
  return toConfig(ctx.data as RawConfig, file);
}

/** The opening `[` or `{` of the first flow collection in `text` that has no closing bracket. */
function unclosedFlow(text: string): { offset: number; source: string } | undefined {
  const visit = (token: unknown): { offset: number; source: string } | undefined => {
    if (!token || typeof token !== 'object') return undefined;
    const t = token as { type?: string; start?: { offset: number; source: string }; end?: Array<{ type: string }> };
    if (t.type === 'flow-collection' && t.start && !t.end?.some((e) => e.type === 'flow-seq-end' || e.type === 'flow-map-end')) return t.start;
    for (const value of Object.values(token)) {
      const found = Array.isArray(value) ? value.map(visit).find(Boolean) : visit(value);
      if (found) return found;
    }
    return undefined;
  };
  for (const token of new Parser().parse(text)) {
    const found = visit(token);
    if (found) return found;
  }
  return undefined;
}

/** What the problem finders share. */
interface Context {
  doc: Document;
  lines: LineCounter;
  /** The document as plain data, after interpolation (and, once validated, with defaults). */
  data: unknown;
  /** Dotted paths of values that came (partly) from the environment: never shown in messages. */
  fromEnv: Set<string>;
  /** Dotted paths of values with a broken reference: an unset variable without default, or bad syntax. */
  unresolved: Set<string>;
}

// ---------------------------------------------------------------------------------------------
// Interpolation

const REFERENCE = /\$\$\{|\$\{([^}]*)\}|\$\{[^}]*/g;
const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * Replaces `${VAR}` and `${VAR:-default}` in every scalar value of the document (keys are left
 * alone); `$${` stands for a literal `${`. `:-` uses the default when VAR is unset or empty.
 * Working on parsed nodes means a value can never inject YAML structure. An unquoted value
 * is re-typed after substitution, so `maxBatch: ${BATCH:-500}` is the number 500.
 */
function interpolate(ctx: Context, env: NodeJS.ProcessEnv): Problem[] {
  const problems: Problem[] = [];
  const visit = (node: unknown, segments: Segment[]): void => {
    if (isMap(node)) {
      for (const pair of node.items) visit(pair.value, [...segments, keyText(pair.key)]);
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => visit(item, [...segments, i]));
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
      const path = dotted(segments);
      const line = lineAt(ctx, node);
      let substituted = false;
      const result = node.value.replace(REFERENCE, (match, inner: string | undefined) => {
        if (match === '$${') return '${';
        const ref = inner === undefined ? undefined : VARIABLE.exec(inner);
        if (!ref) {
          problems.push({
            path,
            line,
            message: `invalid reference "${match}"; write \${VAR} or \${VAR:-default} (and $\${ for a literal \${)`,
          });
          ctx.unresolved.add(path);
          return '';
        }
        const [, name, fallback] = ref;
        const value = env[name];
        substituted = true;
        if (value !== undefined && !(fallback !== undefined && value === '')) return value;
        if (fallback !== undefined) return fallback;
        problems.push({
          path,
          line,
          message: `environment variable ${name} is not set and \${${name}} has no default; set it or write \${${name}:-default}`,
        });
        ctx.unresolved.add(path);
        return '';
      });
      if (substituted) ctx.fromEnv.add(path);
      node.value = substituted && node.type === 'PLAIN' ? retype(result) : result;
    }
  };
  visit(ctx.doc.contents, []);
  return problems;
}

/** The number or boolean an unquoted YAML scalar with this text would be; otherwise the text. */
function retype(text: string): unknown {
  if (/^[-+]?(?:[0-9]+|[0-9]*\.[0-9]+)(?:[eE][-+]?[0-9]+)?$/.test(text)) return Number(text);
  if (/^(?:true|True|TRUE)$/.test(text)) return true;
  if (/^(?:false|False|FALSE)$/.test(text)) return false;
  return text;
}

// ---------------------------------------------------------------------------------------------
// Schema validation

let validator: ValidateFunction | undefined;

/** The compiled schema; it fills in defaults as it validates (`useDefaults`). */
function validate(data: unknown): readonly ErrorObject[] {
  if (!validator) {
    const ajv = new Ajv({ allErrors: true, useDefaults: true, discriminator: true, verbose: true, allowUnionTypes: true });
    ajv.addKeyword('x-expected');
    ajv.addKeyword('x-notYetAvailable');
    validator = ajv.compile(configSchema);
  }
  return validator(data) ? [] : (validator.errors ?? []);
}

/** Every schema violation, as problems with YAML paths, lines and readable messages. */
function schemaProblems(ctx: Context): Problem[] {
  const problems: Problem[] = [];
  for (const e of validate(ctx.data)) {
    const at = pointerSegments(e.instancePath, ctx.data);
    const schema = (e.parentSchema ?? {}) as SchemaNode;
    const notYet = schema['x-notYetAvailable'] ?? [];
    const problem = (segments: Segment[], message: string, lineSegments = segments): void => {
      problems.push({ path: dotted(segments), line: lineOf(ctx, lineSegments), message });
    };

    switch (e.keyword) {
      case 'additionalProperties': {
        const key = String(e.params.additionalProperty);
        const expected = Object.keys(schema.properties ?? {}).join(', ');
        problem(
          [...at, key],
          notYet.includes(key)
            ? `"${key}" is not available in this version yet`
            : `unknown key "${key}"; expected one of: ${expected}`,
        );
        break;
      }
      case 'required': {
        const key = String(e.params.missingProperty);
        problem([...at, key], `missing required key "${key}"`, at);
        break;
      }
      case 'discriminator': {
        // A missing `type` is already reported by `required`.
        if (e.params.tagValue === undefined) break;
        const tag = String(e.params.tag);
        const allowed = (schema.oneOf ?? []).map((branch) => branch.properties?.[tag]?.const);
        problem([...at, tag], enumMessage(ctx, [...at, tag], e.params.tagValue, allowed, notYet));
        break;
      }
      case 'enum':
        problem(at, enumMessage(ctx, at, e.data, e.params.allowedValues as unknown[], notYet));
        break;
      case 'const':
        problem(at, `expected ${JSON.stringify(e.params.allowedValue)}, got ${show(ctx, at, e.data)}`);
        break;
      case 'type': {
        const types = ([] as string[]).concat(e.params.type as string | string[]).map(typeName);
        problem(at, `expected ${types.join(' or ')}, got ${describe(ctx, at, e.data)}`);
        break;
      }
      case 'minimum':
      case 'maximum':
        problem(at, `expected ${e.keyword === 'minimum' ? 'at least' : 'at most'} ${e.params.limit}, got ${show(ctx, at, e.data)}`);
        break;
      case 'minLength':
        problem(at, e.params.limit === 1 ? 'expected a non-empty string' : `expected at least ${e.params.limit} characters`);
        break;
      case 'minItems':
        problem(at, e.params.limit === 1 ? 'expected a non-empty list' : `expected at least ${e.params.limit} items`);
        break;
      case 'minProperties':
        problem(at, `expected ${schema['x-expected'] ?? `at least ${e.params.limit} keys`}, got an empty map`);
        break;
      case 'uniqueItems': {
        const item = (e.data as unknown[])[e.params.j as number];
        problem(at, `${show(ctx, at, item)} is listed more than once`);
        break;
      }
      case 'pattern': {
        const expected = schema['x-expected'] ?? `a string matching ${e.params.pattern}`;
        if (e.propertyName !== undefined) {
          // propertyNames: the name of a key is wrong (e.g. a lens name).
          problem([...at, e.propertyName], `invalid name "${e.propertyName}"; expected ${expected}`);
        } else {
          problem(at, `expected ${expected}, got ${show(ctx, at, e.data)}`);
        }
        break;
      }
      case 'propertyNames':
        break; // reported by the failing keyword inside it, which names the key
      default:
        problem(at, e.message ?? `invalid (${e.keyword})`);
    }
  }
  return problems;
}

/** The part of a schema object the messages read. */
interface SchemaNode {
  properties?: Record<string, { const?: unknown }>;
  oneOf?: SchemaNode[];
  'x-expected'?: string;
  'x-notYetAvailable'?: readonly unknown[];
}

function enumMessage(ctx: Context, at: Segment[], value: unknown, allowed: unknown[], notYet: readonly unknown[]): string {
  const expected = allowed.map(String).join(', ');
  if (notYet.includes(value)) return `${show(ctx, at, value)} is not available in this version yet; expected one of: ${expected}`;
  return `expected one of: ${expected}; got ${show(ctx, at, value)}`;
}

/** JSON Schema type names in YAML words. */
function typeName(type: string): string {
  return type === 'object' ? 'map' : type === 'array' ? 'list' : type;
}

// ---------------------------------------------------------------------------------------------
// Checks the schema cannot express

/** The validated data (defaults filled in) before it is shaped into a Config. */
interface RawConfig {
  sources: Record<string, Record<string, unknown> & { type: string }>;
  lenses: Record<string, LensConfig>;
  sinks: Record<string, Record<string, unknown> & { type: string }>;
  state: StateConfig;
  metrics: { listen: string } | boolean;
  pipeline: Config['pipeline'];
  log: Config['log'];
  worker?: WorkerConfig;
}

/**
 * Lens references to sources and sinks, and what each source's and sink's spec checks (derived
 * names, settings its lenses need). Runs beside the schema check on data that may be
 * malformed, so it reads defensively.
 */
function referenceProblems(ctx: Context, raw: unknown): Problem[] {
  const problems: Problem[] = [];
  const section = (v: unknown): Record<string, any> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, any>) : {});
  const data = { sources: section(section(raw).sources), sinks: section(section(raw).sinks), lenses: section(section(raw).lenses) };
  const lenses = Object.entries(data.lenses).map(([name, lens]): [string, Record<string, any>] => [name, section(lens)]);
  const plugins = [
    { kind: 'source', entries: data.sources, specs: sourceSpecs as readonly PluginSpecLike[] },
    { kind: 'sink', entries: data.sinks, specs: sinkSpecs as readonly PluginSpecLike[] },
  ] as const;
  for (const { kind, entries, specs } of plugins) {
    for (const [name, value] of Object.entries(entries)) {
      const spec = specs.find((s) => s.type === section(value).type);
      const own = lenses.filter(([, lens]) => lens[kind] === name);
      for (const p of spec?.problems?.({ name, raw: section(value), lenses: own }) ?? []) {
        problems.push({ path: dotted(p.path), line: lineOf(ctx, p.path), message: p.message });
      }
    }
  }
  const worker = section(section(raw).worker);
  if (worker.listen !== undefined && !Object.values(data.sinks).some((s) => section(s).type === 'worker')) {
    problems.push({
      path: 'worker.listen',
      line: lineOf(ctx, ['worker', 'listen']),
      message: 'the bundled worker serves only lenses whose sink has type: worker, and no sink has; add a sink { type: worker } or remove the worker section',
    });
  }
  for (const [name, lens] of lenses) {
    const source = section(data.sources[lens.source]);
    const spec = sourceSpecs.find((s) => s.type === source.type);
    const sinkType = section(data.sinks[lens.sink]).type;
    const capability = sinkSpecs.find((s) => s.type === sinkType)?.capabilities.readsTable;
    const problem = spec && capability && streamProblem(spec, source, forLens(capability, lens as unknown as LensConfig), { ...lens, name, sinkType });
    if (problem) problems.push({ path: dotted(problem.at), line: lineOf(ctx, problem.at), message: problem.message });
    if (spec?.capabilities.requiresPrimaryKey && lens.primaryKey === undefined) {
      problems.push({
        path: dotted(['lenses', name, 'primaryKey']),
        line: lineOf(ctx, ['lenses', name]),
        message: `source "${lens.source}" is a ${source.type} stream with no table catalog to read keys from; set primaryKey: [<key columns>] on this lens`,
      });
    }
    for (const kind of ['source', 'sink'] as const) {
      const defined = Object.keys(kind === 'source' ? data.sources : data.sinks);
      if (typeof lens[kind] === 'string' && !defined.includes(lens[kind])) {
        const at = ['lenses', name, kind];
        problems.push({
          path: dotted(at),
          line: lineOf(ctx, at),
          message: `unknown ${kind} ${show(ctx, at, lens[kind])}; defined ${kind}s: ${defined.join(', ') || '(none)'}`,
        });
      }
    }
  }
  return problems;
}

/** What the checks read of a spec. */
type PluginSpecLike = Pick<SourceSpec, 'type' | 'problems'>;

// ---------------------------------------------------------------------------------------------
// Building the Config

/** Shapes validated data into a Config: the plugins' derived defaults, qualified table names, resolved paths. */
function toConfig(data: RawConfig, file: string): Config {
  const sources: Record<string, SourceConfig> = {};
  for (const [name, raw] of Object.entries(data.sources)) {
    sources[name] = (sourceSpec(raw.type).resolve?.(raw, name) ?? raw) as SourceConfig;
  }
  const lenses: Record<string, LensConfig> = {};
  for (const [name, l] of Object.entries(data.lenses)) {
    const source = sources[l.source];
    lenses[name] = {
      ...l,
      table: sourceSpec(source.type).qualifyTable(l.table, source),
      ...(l.primaryKey && { primaryKey: l.primaryKey.map(columnName) }),
      ...(l.fields && { fields: l.fields.map(columnName) }),
      ...(l.metadata && { metadata: l.metadata.map(columnName) }),
      ...(l.changeTrackingColumn && { changeTrackingColumn: columnName(l.changeTrackingColumn) }),
      ...(l.payload && {
        payload: Array.isArray(l.payload)
          ? l.payload.map(columnName)
          : Object.fromEntries(Object.entries(l.payload).map(([field, column]) => [field, columnName(column)])),
      }),
    };
  }
  const sinks: Record<string, SinkConfig> = {};
  for (const [name, raw] of Object.entries(data.sinks)) {
    sinks[name] = (sinkSpec(raw.type).resolve?.(raw, name) ?? raw) as SinkConfig;
  }
  const resolvePath = (path: string) => (isAbsolute(path) ? path : resolve(dirname(file), path));
  const usesWorker = Object.values(sinks).some((s) => s.type === 'worker');
  const workerData = data.worker!; // the schema's default fills it in
  const worker: WorkerConfig | null = usesWorker
    ? {
        ...workerData,
        embedder: workerData.embedder.type === 'openai' ? { ...workerData.embedder, url: workerData.embedder.url.replace(/\/+$/, '') } : workerData.embedder,
        index: { ...workerData.index, path: resolvePath(workerData.index.path) },
      }
    : null;
  const state: StateConfig = data.state.type === 'embedded' ? { type: 'embedded', path: resolvePath(data.state.path) } : data.state;
  const metrics =
    data.metrics === false ? null : data.metrics === true ? { listen: DEFAULT_METRICS_LISTEN } : { listen: data.metrics.listen };
  return { sources, lenses, sinks, state, metrics, pipeline: data.pipeline, log: data.log, worker };
}

// ---------------------------------------------------------------------------------------------
// Paths, lines and values in messages

/** `lenses.products.fields[1]` */
function dotted(segments: Segment[]): string {
  if (segments.length === 0) return '(root)';
  return segments.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
}

/** An ajv instancePath (`/lenses/products/fields/1`) as segments; list indices become numbers. */
function pointerSegments(pointer: string, data: unknown): Segment[] {
  if (pointer === '') return [];
  const segments: Segment[] = [];
  let here = data;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    const segment = Array.isArray(here) ? Number(key) : key;
    segments.push(segment);
    here = here !== null && typeof here === 'object' ? (here as Record<string, unknown>)[key] : undefined;
  }
  return segments;
}

function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key);
}

/** The 1-based line of a path: its key's line, else its value's; the nearest existing ancestor's if it is missing. */
function lineOf(ctx: Context, segments: Segment[]): number | undefined {
  let node: unknown = ctx.doc.contents;
  let line = lineAt(ctx, node);
  for (const segment of segments) {
    if (isAlias(node)) node = node.resolve(ctx.doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => keyText(p.key) === String(segment));
      if (!pair) return line;
      line = lineAt(ctx, pair.key) ?? lineAt(ctx, pair.value) ?? line;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === 'number' && segment < node.items.length) {
      node = node.items[segment];
      line = lineAt(ctx, node) ?? line;
    } else {
      return line;
    }
  }
  return line;
}

function lineAt(ctx: Context, node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  return range ? ctx.lines.linePos(range[0]).line : undefined;
}

const HIDDEN_KEYS = new Set(['key', 'password', 'secret', 'token']);

/**
 * A value as it may appear in a message: secrets (keys named key/password/…, anything from the
 * environment) are `"***"`, URLs lose their password, long strings are cut.
 */
function show(ctx: Context, segments: Segment[], value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  const last = segments[segments.length - 1];
  if (ctx.fromEnv.has(dotted(segments)) || (typeof last === 'string' && HIDDEN_KEYS.has(last))) return '"***"';
  if (typeof value !== 'string') return String(value);
  let text = last === 'url' ? redactUrl(value) : value;
  if (text.length > 80) text = `${text.slice(0, 77)}...`;
  return JSON.stringify(text);
}

/** `show`, with the value's type in front: `string "abc"`, `number 5`, `a map`. */
function describe(ctx: Context, segments: Segment[], value: unknown): string {
  const shown = show(ctx, segments, value);
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'
    ? `${typeof value} ${shown}`
    : shown;
}

/**
 * Why a lens's sink cannot work on its stream source (no table to read), if it cannot: the sink
 * reads the table always, for the initial full sync, or for changes that carry no row when the
 * stream's changes may carry none (a Tributary bus written without payload).
 */
function streamProblem(
  spec: SourceSpec,
  source: Record<string, unknown>,
  readsTable: ReadsTable,
  lens: { name: string; source?: unknown; sink?: unknown; initialSync?: unknown; sinkType: unknown },
): { at: string[]; message: string } | undefined {
  if (readsTables(spec, source)) return undefined;
  const stream = `source "${lens.source}" is a ${source.type} stream`;
  const carries = spec.capabilities.carriesRows;
  if (readsTable === 'always') {
    return { at: ['lenses', lens.name, 'sink'], message: `sink "${lens.sink}" (${lens.sinkType}) reads the lens's table, and ${stream} with no table to read; use a sink that takes what the stream carries (semilayer, seyn)` };
  }
  if (readsTable === 'for full syncs' && lens.initialSync !== 'none') {
    return { at: ['lenses', lens.name, 'initialSync'], message: `a ${lens.sinkType} sink's initial full sync reads the lens's table, and ${stream}; set initialSync: none (the stream's own full-load or snapshot records serve as the full sync)` };
  }
  if (readsTable === 'for changes without rows' && !(typeof carries === 'function' ? carries(source) : carries)) {
    return {
      at: ['lenses', lens.name, 'payload'],
      message: `sink "${lens.sink}" (${lens.sinkType}) sends each change's row (the lens has payload), reading it by id when the change carries none, and ${stream} whose changes may carry none; give the source the database the rows are in (a kafka source's rowsFrom), or remove payload`,
    };
  }
  return undefined;
}
