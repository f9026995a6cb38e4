#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * The `tributary` command line. The interpreter line caps V8's young generation: it keeps the
 * resident memory of a catch-up near 150 MB for no measurable loss of speed (bench/). Exit codes: 0 success, 1 runtime failure, 2 invalid
 * configuration or usage.
 */
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { startDaemon, type StatusSnapshot } from './daemon.js';
import type { SweepProgress } from './sweep.js';
import { ConfigError, describeError } from './errors.js';
import { parseListen } from './http.js';
import { createLogger } from './log.js';
import { openStateStore } from './state/index.js';
import { MAX_BATCH, type ControlReply, type ControlRequest, type RecordChange, type StateStore } from './types.js';
import { replyKey } from './control.js';

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
  tributary pause|resume --config FILE --lens NAME
                                     hold or release a lens in the running daemon
  tributary ingest LENS --config FILE --mode full|incremental|records
                                     ask the running daemon for a sync of one lens now
  tributary COMMAND --help           help for one command

The config file may also come from TRIBUTARY_CONFIG. Docs: README.md and config/example.yaml.`;

/** How long pause/resume/ingest wait for the daemon to take their request. */
const CONTROL_WAIT_MS = Number(process.env.TRIBUTARY_CONTROL_WAIT_MS ?? 10_000);
/** Changes per `ingest --mode records` request. */
const RECORDS_PER_REQUEST = MAX_BATCH;
/** How long the CLI waits for a taken request to take effect (changes to be delivered). */
const REPLY_WAIT_MS = Number(process.env.TRIBUTARY_REPLY_WAIT_MS ?? 300_000);

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
Payload sinks add what applies: full-sync-rows=N (a full sync running), skipped-deletes=N (seyn),
ingestion=ID and soft-replace-at=TIME (psykhe).
With several replicas (state: postgres) each running one prints its lines, marked replica=HOST:PID;
a standby's lenses show the state standby.
--json prints the whole snapshot (an array of snapshots when several replicas run).`,
  dlq: `tributary dlq list --config FILE [--lens NAME] [--json]
tributary dlq replay --config FILE --lens NAME [--id ID ...]
tributary dlq drop --config FILE --lens NAME [--id ID ...]

list reads the dead-letter store (it works whether or not the daemon runs). replay delivers the
items again (all, or the given ids) and removes them; drop removes them without retrying.
For a worker lens both go through the running daemon's worker API (worker.listen), with a key
of scope ingest or admin from the same file; for a lens with a hosted sink (batches it answered
400) through the state store to the running daemon, which removes a replayed letter once the
sink accepted it.`,
  pause: `tributary pause --config FILE --lens NAME

Pauses one lens of the running daemon: a polling lens is no longer polled, smart sync sweeps
wait, and a streaming lens holds its deliveries (when they pile up, backpressure pauses the
source, which holds its position). The pause survives restarts; \`tributary status\` shows
"paused". Prints what the daemon did; exit 0 once it took effect, 1 if no daemon took the request
within ${CONTROL_WAIT_MS / 1000} s (TRIBUTARY_CONTROL_WAIT_MS sets that wait in milliseconds) or it failed.`,
  resume: `tributary resume --config FILE --lens NAME

Resumes a lens paused with \`tributary pause\`: held deliveries go out, polling and sweeps resume.`,
  ingest: `tributary ingest LENS --config FILE --mode full|incremental|records

Asks the running daemon to sync one lens now:
  full         the lens's sink re-reads the whole lens, and a smart sync sweep runs now
               (lenses with smartSyncInterval)
  incremental  a polling lens (capture: poll) polls now; other lenses ask their sink for an
               incremental sync (rows past its changeTrackingColumn cursor)
  records      reads {"id": "...", "action": "upsert"|"delete"} JSON lines from stdin and
               queues them for the lens, like changes from the source, and waits
               until the sink accepted them
Prints what the daemon did; exit 0 once it took effect, 1 if no daemon took the request within
${CONTROL_WAIT_MS / 1000} s or it failed (records not delivered before the daemon stopped), 2 for usage errors.`,
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

/** A snapshot saved more recently than this is a running replica's. */
const LIVE_STATUS_MS = 15_000;

/**
 * The snapshots `status` shows: every replica that saved one lately (an active one and its
 * standbys), or else the newest one (the daemon is not running).
 */
async function readStatus(state: StateStore): Promise<StatusSnapshot[]> {
  const snapshots: StatusSnapshot[] = [];
  for (const key of await state.keys('status/')) {
    const snapshot = await state.get<StatusSnapshot>(key);
    if (snapshot) snapshots.push(snapshot);
  }
  snapshots.sort((a, b) => Date.parse(b.updatedAt) - Date.parse(a.updatedAt));
  const live = snapshots.filter((s) => Date.now() - Date.parse(s.updatedAt) < LIVE_STATUS_MS);
  return live.length > 0 ? live : snapshots.slice(0, 1);
}

function formatStatus(snapshots: StatusSnapshot[], lensFilter?: string): string {
  const rows = snapshots.flatMap((snapshot) => snapshot.lenses.filter((l) => !lensFilter || l.lens === lensFilter).map((l) => ({ ...l, instance: snapshot.instance })));
  if (lensFilter && rows.length === 0) throw new UsageError(`no lens named "${lensFilter}" in the last status`);
  const width = Math.max(...rows.map((l) => l.lens.length), 4);
  const stateWidth = Math.max(...rows.map((l) => l.state.length), 9);
  const lines = rows.map((l) => {
    let line = `${l.lens.padEnd(width)}  ${l.state.padEnd(stateWidth)}  cursor=${l.position ?? '-'}  pending=${l.pending}  rate=${l.rate} rows/s  dlq=${l.dlq + (l.worker?.dlq ?? 0)}`;
    if (l.worker) line += `  worker=${l.worker.state} queued=${l.worker.pending} indexed=${l.worker.indexed}${l.worker.cursor ? ` sweep=${l.worker.cursor}` : ''}`;
    if (l.worker?.lastError) line += `  worker-error="${l.worker.lastError}"`;
    if (l.sink?.fullSync?.state === 'running') line += `  full-sync-rows=${l.sink.fullSync.rows}`;
    if (l.sink?.lastIngestionId !== undefined) line += `  ingestion=${l.sink.lastIngestionId}`;
    if (l.sink?.resyncAt) line += `  soft-replace-at=${l.sink.resyncAt}`;
    if (l.sink?.resyncError) line += `  sink-error="${l.sink.resyncError}"`;
    if (l.sink?.skippedDeletes) line += `  skipped-deletes=${l.sink.skippedDeletes}`;
    if (l.capture) line += `  capture=${l.capture.mode} ("${l.capture.reason}")`;
    if (l.sweep) line += `  ${formatSweep(l.sweep)}`;
    if (l.partLagMs) line += `  lag=${Object.entries(l.partLagMs).map(([part, ms]) => `${part}:${ms}ms`).join(',') || '-'}`;
    if (l.partMessagesBehind) line += `  behind=${Object.entries(l.partMessagesBehind).map(([part, n]) => `${part}:${n}`).join(',') || '-'}`;
    if (l.fullSync) line += `  full-sync="${l.fullSync}"`;
    if (l.lastError) line += `  error="${l.lastError}"`;
    if (snapshots.length > 1) line += `  replica=${l.instance}`;
    return line;
  });
  const [newest] = snapshots;
  const ageSeconds = Math.round((Date.now() - Date.parse(newest.updatedAt)) / 1000);
  if (ageSeconds > 5) lines.push(`(saved ${ageSeconds}s ago by pid ${newest.pid}: the daemon may not be running)`);
  return lines.join('\n');
}

/** `smart-sync=scanning 42% rows=420000 upserts=12 deletes=3`, or the last one's figures while waiting. */
function formatSweep(s: SweepProgress): string {
  const percent = s.total && (s.state === 'scanning' || s.state === 'merging') ? ` ${Math.min(100, Math.floor((s.rows / s.total) * 100))}%` : '';
  let text = `smart-sync=${s.state}${percent} rows=${s.rows} upserts=${s.upserts} deletes=${s.deletes}`;
  if (s.lastFinishedAt) text += ` last=${s.lastFinishedAt}`;
  if (s.lastError && s.state === 'error') text += ` smart-sync-error="${s.lastError}"`;
  return text;
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
      mode: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: command === 'dlq' || command === 'ingest' || command === 'triggers',
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
      const snapshots = await readStatus(state);
      if (snapshots.length === 0) {
        console.log('no status yet: the daemon has not run with this state store');
        return 1;
      }
      console.log(values.json ? JSON.stringify(snapshots.length === 1 ? snapshots[0] : snapshots, null, 2) : formatStatus(snapshots, values.lens));
      return 0;
    } finally {
      await state.close();
    }
  }

  if (command === 'dlq') return dlq(loadConfig(file), positionals[0], values);
  if (command === 'triggers') return triggers(loadConfig(file), positionals[0], values.lens);
  if (command === 'pause' || command === 'resume' || command === 'ingest') return control(command, loadConfig(file), positionals[0], values);

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
  if (config.sinks[lens.sink]?.type !== 'worker') {
    // Batches a hosted sink rejected: the daemon delivers them again (or forgets them).
    return (await sendToDaemon(config, [{ kind: 'dlq', lens: options.lens, action, ids: options.id }])) ? 0 : 1;
  }
  if (!worker?.listen) {
    console.error(`tributary: dlq ${action} of a worker lens goes through the worker's HTTP API: set worker.listen.`);
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
  const { manageTriggers } = await import('../connectors/postgres/trigger/manage.js');
  for (const line of await manageTriggers(action, config, lensName)) console.log(line);
  return 0;
}

/** `pause`, `resume` and `ingest`: a request through the state store to the running daemon. */
async function control(command: 'pause' | 'resume' | 'ingest', config: Config, positional: string | undefined, options: { lens?: string; mode?: string }): Promise<number> {
  const lens = command === 'ingest' ? positional : options.lens;
  if (!lens) throw new UsageError(command === 'ingest' ? 'ingest needs the lens: tributary ingest LENS --mode full|incremental|records' : `${command} needs --lens NAME`);
  if (!config.lenses[lens]) throw new UsageError(`no lens named "${lens}" in the configuration`);
  const requests: ControlRequest[] = [];
  if (command !== 'ingest') {
    requests.push({ kind: command, lens });
  } else if (options.mode === 'full' || options.mode === 'incremental') {
    requests.push({ kind: 'ingest', lens, mode: options.mode });
  } else if (options.mode === 'records') {
    const changes = await readRecords();
    for (let i = 0; i < changes.length; i += RECORDS_PER_REQUEST) requests.push({ kind: 'ingest', lens, mode: 'records', changes: changes.slice(i, i + RECORDS_PER_REQUEST) });
  } else {
    throw new UsageError(`ingest needs --mode full, incremental or records${options.mode === undefined ? '' : `, not ${JSON.stringify(options.mode)}`}`);
  }
  return (await sendToDaemon(config, requests)) ? 0 : 1;
}

/**
 * Sends requests to the running daemon through the state store and prints the daemon's reply
 * to each; false (said on stderr) if no daemon took one in time, or one failed.
 */
async function sendToDaemon(config: Config, requests: ControlRequest[]): Promise<boolean> {
  const state = await openStateStore(config.state, { readOnly: true });
  try {
    for (const request of requests) {
      const id = await state.sendRequest({ ...request, expiresAt: Date.now() + CONTROL_WAIT_MS });
      if (!(await waitFor(() => state.requestPending(id).then((pending) => !pending), CONTROL_WAIT_MS))) {
        console.error(`tributary: no running daemon took the request within ${CONTROL_WAIT_MS / 1000} s; start one with \`tributary run\` (the request expires unapplied)`);
        return false;
      }
      let reply: ControlReply | undefined;
      if (!(await waitFor(async () => (reply = await state.get<ControlReply>(replyKey(id))) !== undefined, REPLY_WAIT_MS))) {
        console.error(`tributary: the daemon took the request but did not finish it within ${REPLY_WAIT_MS / 1000} s; see \`tributary status\``);
        return false;
      }
      if (!reply!.ok) {
        console.error(`tributary: ${reply!.message}`);
        return false;
      }
      console.log(reply!.message);
    }
    return true;
  } finally {
    await state.close();
  }
}

/** Polls `done` every 100 ms until it is true (true) or `ms` passed (false). */
async function waitFor(done: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  return true;
}

/** `{"id","action"}` JSON lines from stdin; a bad line is a usage error naming it. */
async function readRecords(): Promise<RecordChange[]> {
  const changes: RecordChange[] = [];
  let n = 0;
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    n++;
    if (line.trim() === '') continue;
    let parsed: { id?: unknown; action?: unknown };
    try {
      parsed = JSON.parse(line);
    } catch {
      throw new UsageError(`stdin line ${n}: not JSON; expected {"id": "...", "action": "upsert"|"delete"}`);
    }
    if (typeof parsed?.id !== 'string' || parsed.id === '' || (parsed.action !== 'upsert' && parsed.action !== 'delete')) {
      throw new UsageError(`stdin line ${n}: expected {"id": "<non-empty string>", "action": "upsert"|"delete"}`);
    }
    changes.push({ id: parsed.id, action: parsed.action });
  }
  return changes;
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
  const failedLater = daemon.failed.then(async (err) => {
    log.error({ err: describeError(err) }, 'a source stopped; exiting so that a restart stands by or takes over cleanly');
    await daemon.stop().catch(() => {});
    return 1;
  });
  return Promise.race([stopped, failed, failedLater]);
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
