#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * The `tributary` command line. The interpreter line caps V8's young generation: it keeps the
 * resident memory of a catch-up near 150 MB for no measurable loss of speed (bench/). Exit codes: 0 success, 1 runtime failure, 2 invalid
 * configuration or usage.
 */
import { parseArgs } from 'node:util';
import { loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { startDaemon, type StatusSnapshot } from './daemon.js';
import { ConfigError, describeError } from './errors.js';
import { parseListen } from './http.js';
import { createLogger } from './log.js';
import { openStateStore } from './state/index.js';

const USAGE = `tributary: keeps search and AI indexes in step with your databases

Usage:
  tributary run --config FILE        run every pipeline the file declares
  tributary validate --config FILE   check a configuration file and exit
  tributary status --config FILE [--lens NAME] [--json]
                                     one line a lens: state, position, pending, rate, dead letters
  tributary dlq list|replay|drop --config FILE [--lens NAME] [--id ID ...]
                                     the dead-letter queue: show it, queue items again, or drop them
  tributary triggers install|uninstall --lens NAME [--config FILE]
                                     add or remove a lens table's capture triggers (capture: trigger)
  tributary COMMAND --help           help for one command

The config file may also come from TRIBUTARY_CONFIG. Docs: README.md and config/example.yaml.`;

const HELP: Record<string, string> = {
  run: `tributary run --config FILE

Starts every source, lens and sink declared in FILE and runs until SIGTERM or SIGINT, which
drain pending batches (up to pipeline.drainTimeoutMs), acknowledge them and exit 0.
Logs are JSON lines on stdout. Metrics, /healthz and /readyz are served on metrics.listen.`,
  validate: `tributary validate --config FILE

Checks FILE as a whole (YAML, every key and type, references between sections) without
connecting to anything. Prints each problem with its YAML path and line; exit code 2 if any.`,
  status: `tributary status --config FILE [--lens NAME] [--json]

Prints one line a lens, as the running daemon last saved it in the state store:
  products  streaming  cursor=0/16B3748  pending=2  rate=18 rows/s  dlq=0
Lenses indexed by the bundled worker add: worker=indexing queued=12 indexed=48211
--json prints the whole snapshot.`,
  dlq: `tributary dlq list --config FILE [--lens NAME] [--json]
tributary dlq replay --config FILE --lens NAME [--id ID ...]
tributary dlq drop --config FILE --lens NAME [--id ID ...]

list reads the dead-letter store (it works whether or not the daemon runs). replay queues the
items of a worker lens again (all, or the given ids) and removes them from the queue; drop
removes them without retrying. Both go through the running daemon's worker API
(worker.listen), with a key of scope ingest or admin from the same file.`,
  triggers: `tributary triggers install --lens NAME [--config FILE]
tributary triggers uninstall --lens NAME [--config FILE]

For capture: trigger with installTriggers: false (DDL through review): install creates the
lens source's triggerSchema, its changelog table, and the capture function and triggers on the
lens table, idempotently; it needs CREATE on the schema (or database) and TRIGGER on the table.
uninstall removes the table's triggers and function and its undelivered changelog rows, and
the changelog and schema once no source captures anything. Prints the SQL objects touched.`,
};

class UsageError extends Error {}

function configPath(value: string | undefined): string {
  const file = value ?? process.env.TRIBUTARY_CONFIG;
  if (!file) throw new UsageError('missing --config FILE (or TRIBUTARY_CONFIG)');
  return file;
}

function formatStatus(snapshot: StatusSnapshot, lensFilter?: string): string {
  const rows = snapshot.lenses.filter((l) => !lensFilter || l.lens === lensFilter);
  if (lensFilter && rows.length === 0) throw new UsageError(`no lens named "${lensFilter}" in the last status`);
  const width = Math.max(...rows.map((l) => l.lens.length), 4);
  const stateWidth = Math.max(...rows.map((l) => l.state.length), 9);
  const lines = rows.map((l) => {
    let line = `${l.lens.padEnd(width)}  ${l.state.padEnd(stateWidth)}  cursor=${l.position ?? '-'}  pending=${l.pending}  rate=${l.rate} rows/s  dlq=${l.dlq + (l.worker?.dlq ?? 0)}`;
    if (l.worker) line += `  worker=${l.worker.state} queued=${l.worker.pending} indexed=${l.worker.indexed}${l.worker.cursor ? ` sweep=${l.worker.cursor}` : ''}`;
    if (l.worker?.lastError) line += `  worker-error="${l.worker.lastError}"`;
    if (l.capture) line += `  capture=${l.capture.mode} ("${l.capture.reason}")`;
    if (l.fullSync) line += `  full-sync="${l.fullSync}"`;
    if (l.lastError) line += `  error="${l.lastError}"`;
    return line;
  });
  const ageSeconds = Math.round((Date.now() - Date.parse(snapshot.updatedAt)) / 1000);
  if (ageSeconds > 5) lines.push(`(saved ${ageSeconds}s ago by pid ${snapshot.pid}: the daemon may not be running)`);
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const command = argv[0];
  const { values, positionals } = parseArgs({
    args: argv.slice(command && !command.startsWith('-') ? 1 : 0),
    options: {
      config: { type: 'string', short: 'c' },
      lens: { type: 'string' },
      json: { type: 'boolean' },
      id: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: command === 'dlq' || command === 'triggers',
    strict: true,
  });
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return 0;
  }
  if (!(command in HELP)) throw new UsageError(`unknown command "${command}"`);
  if (values.help) {
    console.log(HELP[command]);
    return 0;
  }
  const file = configPath(values.config);

  if (command === 'validate') {
    const config = loadConfig(file);
    console.log(
      `${file}: valid (${Object.keys(config.sources).length} source(s), ${Object.keys(config.lenses).length} lens(es), ${Object.keys(config.sinks).length} sink(s))`,
    );
    return 0;
  }

  if (command === 'status') {
    const config = loadConfig(file);
    const state = await openStateStore(config.state, { readOnly: true });
    try {
      const snapshot = await state.get<StatusSnapshot>('status');
      if (!snapshot) {
        console.log('no status yet: the daemon has not run with this state store');
        return 1;
      }
      console.log(values.json ? JSON.stringify(snapshot, null, 2) : formatStatus(snapshot, values.lens));
      return 0;
    } finally {
      await state.close();
    }
  }

  if (command === 'dlq') return dlq(loadConfig(file), positionals[0], values);
  if (command === 'triggers') return triggers(loadConfig(file), positionals[0], values.lens);

  return run(loadConfig(file));
}

async function dlq(config: Config, action: string | undefined, options: { lens?: string; id?: string[]; json?: boolean }): Promise<number> {
  if (action === 'list') {
    const state = await openStateStore(config.state, { readOnly: true });
    try {
      const letters = await state.listDeadLetters(options.lens);
      if (options.json) console.log(JSON.stringify(letters, null, 2));
      else if (letters.length === 0) console.log('the dead-letter queue is empty');
      for (const l of options.json ? [] : letters) {
        const ids = (l.provenance.changes ?? []).map((c) => c.id);
        console.log(`${l.id}  ${l.lens}  ${l.reason}  attempts=${l.attempts}  last=${l.lastSeen}  ids=${ids.slice(0, 5).join(',')}${ids.length > 5 ? `,… (${ids.length})` : ''}  error="${l.error}"`);
      }
      return 0;
    } finally {
      await state.close();
    }
  }
  if (action !== 'replay' && action !== 'drop') throw new UsageError(`dlq needs list, replay or drop, not ${JSON.stringify(action ?? '')}`);
  if (!options.lens) throw new UsageError(`dlq ${action} needs --lens NAME`);
  const lens = config.lenses[options.lens];
  if (!lens) throw new UsageError(`no lens named "${options.lens}" in the configuration`);
  const worker = config.worker;
  if (config.sinks[lens.sink]?.type !== 'worker' || !worker?.listen) {
    console.error(`tributary: dlq ${action} works for lenses whose sink is the worker, through its HTTP API: set worker.listen.`);
    return 1;
  }
  const key = worker.keys.find((k) => k.scope === 'admin' || k.scope === 'ingest')?.key;
  const { host, port } = parseListen(worker.listen);
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host}:${port}/v1/dlq/${encodeURIComponent(options.lens)}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ action, ids: options.id }),
    });
  } catch (err) {
    console.error(`tributary: cannot reach the worker API at ${url} (${describeError((err as Error).cause ?? err)}); is the daemon running?`);
    return 1;
  }
  const body = (await res.json().catch(() => ({}))) as { count?: number; error?: string };
  if (!res.ok) {
    console.error(`tributary: the worker answered ${res.status}: ${body.error ?? ''}`);
    return 1;
  }
  console.log(action === 'replay' ? `queued ${body.count} change(s) of lens ${options.lens} again` : `dropped ${body.count} dead letter(s) of lens ${options.lens}`);
  return 0;
}

async function triggers(config: Config, action: string | undefined, lensName: string | undefined): Promise<number> {
  if (action !== 'install' && action !== 'uninstall') throw new UsageError(`triggers needs install or uninstall, not ${JSON.stringify(action ?? '')}`);
  if (!lensName) throw new UsageError(`triggers ${action} needs --lens NAME`);
  const lens = config.lenses[lensName];
  if (!lens) throw new UsageError(`no lens named "${lensName}" in the configuration`);
  const { manageTriggers } = await import('../connectors/postgres-trigger/manage.js');
  for (const line of await manageTriggers(action, config, lensName)) console.log(line);
  return 0;
}

async function run(config: Config): Promise<number> {
  const log = createLogger({ level: config.log.level });
  const daemon = await startDaemon(config, log);
  const stopped = new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: string) => {
      if (++signals > 1) {
        log.warn({ signal }, 'second signal: exiting without draining');
        resolve(130);
        return;
      }
      log.info({ signal }, 'draining: delivering pending batches before exit');
      daemon.stop().then(
        (left) => {
          if (left > 0) log.warn({ undelivered: left }, 'drain timed out; these changes replay on the next start');
          else log.info({}, 'drained; bye');
          resolve(0);
        },
        (err) => {
          log.error({ err: describeError(err) }, 'error while draining');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
  });
  const failed = daemon.started.then(
    () => new Promise<number>(() => {}),
    async (err) => {
      log.error({ err: describeError(err) }, 'cannot start');
      await daemon.stop().catch(() => {});
      return 1;
    },
  );
  return Promise.race([stopped, failed]);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`tributary: ${describeError(err)}\n\n${USAGE}`);
      process.exit(2);
    }
    console.error(`tributary: ${describeError(err)}`);
    process.exit(1);
  },
);
