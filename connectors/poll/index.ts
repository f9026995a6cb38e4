/**
 * The polling connector (`capture: poll`), for any source type with a RowReader (its
 * `connectors/<source>/reader.ts`): every `syncInterval`, each lens reads the rows whose changeTrackingColumn
 * moved past its saved cursor, in (column, key) order, page by page, and reports them as
 * upserts. Deletes are invisible to polling: `smartSyncInterval` sweeps catch them.
 *
 * Position: the JSON object of every lens's cursor, `{"products":{"value":"2026-…","id":"42"}}`,
 * the (column, key) of the last row reported. A checkpoint follows every page, so a large
 * backlog is acknowledged as it is delivered; the pipeline saves acknowledged positions and
 * hands the last one back to `start`.
 *
 * Late commits: a transaction can write an earlier timestamp and commit after the cursor moved
 * past it. Each poll therefore starts `syncOverlap` before the saved cursor (for time-valued
 * columns), re-reading that window: rows in it are reported again (sinks are idempotent).
 */
import { linkedAbort, type LinkedAbort } from '../../src/abort.js';
import { parseDuration } from '../../src/config/fragments.js';
import type { LensConfig } from '../../src/config/types.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { SourceSetupError, TributaryError } from '../../src/errors.js';
import type { PluginProblem } from '../../src/plugins.js';
import { readerOptions, type RowReaderOptions } from '../../src/rows.js';
import { supervise, type Supervisor } from '../../src/supervisor.js';
import type { ConnectorContext, Position, RowReader, ScheduledReading, SourceConnector, SourceHandler } from '../../src/types.js';

/** Rows read per query. */
export const PAGE_SIZE = 1000;
/** A failed poll is tried again after a jittered delay from this... */
const RETRY_INITIAL_MS = 1000;
/** ...up to this (or the lens's syncInterval when shorter). */
const RETRY_MAX_MS = 60_000;

interface Cursor {
  value: string;
  id: string;
}

interface PolledLens {
  name: string;
  config: LensConfig;
  reader?: RowReader;
  intervalMs: number;
  overlapMs: number;
  cursor?: Cursor;
  /** Runs the lens's polls: one session opens the reader and polls on schedule until it fails. */
  supervisor?: Supervisor;
  /** Ends the wait for the next poll (`runNow`, resume of a paused lens). */
  wake?: LinkedAbort;
  /** Poll again as soon as possible (`runNow`, also during a poll). */
  again: boolean;
  paused: boolean;
}

/**
 * A polling connector over `openReader`, the source's own row reader: every source that reads
 * tables can be polled. `classify` turns the source's errors into TributaryErrors (retriable
 * ones are tried again, with backoff; see src/supervisor.ts).
 */
export function createPollConnector(
  ctx: ConnectorContext,
  openReader: (options: RowReaderOptions) => Promise<RowReader>,
  classify: (err: unknown) => TributaryError,
): SourceConnector {
  const log = ctx.log;
  const lenses = new Map<string, PolledLens>(
    ctx.lenses.map((l) => [
      l.name,
      {
        name: l.name,
        config: l.config,
        intervalMs: parseDuration(l.config.syncInterval ?? '5m'),
        overlapMs: parseDuration(l.config.syncOverlap ?? '30s'),
        again: false,
        paused: false,
      },
    ]),
  );
  let handler: SourceHandler;
  let stopping = false;
  /** Backpressure: resolves when the pipeline resumes us. */
  let resumed: { promise: Promise<void>; resolve: () => void } | undefined;

  const position = (): Position => JSON.stringify(Object.fromEntries([...lenses.values()].filter((l) => l.cursor).map((l) => [l.name, l.cursor])));

  async function openLensReader(lens: PolledLens): Promise<RowReader> {
    const where = `lens "${lens.name}"`;
    const reader = await openReader(readerOptions(lens.name, lens.config));
    const column = lens.config.changeTrackingColumn;
    const tracking = await reader.describeChangeTracking?.();
    if (tracking && !tracking.exists) {
      await reader.close();
      throw new SourceSetupError(`${where}: changeTrackingColumn "${column}" is not a column of ${lens.config.table}; set it to a column every write moves forward (e.g. updated_at)`);
    }
    if (tracking && !tracking.indexed) {
      log.warn({ lens: lens.name, column, sql: tracking.createIndex }, `polling ${lens.config.table} by ${column} without an index scans the table every ${lens.config.syncInterval}; create one: ${tracking.createIndex}`);
    }
    return reader;
  }

  /** One poll: every page past the cursor (minus the overlap), a checkpoint after each. */
  async function poll(lens: PolledLens): Promise<void> {
    const reader = lens.reader!;
    let from: { value?: string; id?: string } = {};
    if (lens.cursor) {
      const earlier = lens.overlapMs > 0 ? timeMinus(lens.cursor.value, lens.overlapMs) : undefined;
      from = earlier === undefined ? lens.cursor : { value: earlier };
    }
    for (;;) {
      while (resumed && !stopping) await resumed.promise;
      if (stopping || lens.paused) return;
      const rows = await reader.page({ changedSince: from, limit: PAGE_SIZE });
      if (rows.length === 0) return;
      const at = Date.now();
      for (const row of rows) handler.change({ lens: lens.name, id: row.id, action: 'upsert', committedAt: at });
      const last = rows[rows.length - 1];
      from = lens.cursor = { value: last.cursor!, id: last.id };
      handler.checkpoint(position());
      if (rows.length < PAGE_SIZE) return;
    }
  }

  /** Waits until the lens is due (its interval passed, or `runNow`) and not paused; false once stopped. */
  async function nextTurn(lens: PolledLens, signal: AbortSignal): Promise<boolean> {
    const dueAt = Date.now() + lens.intervalMs;
    while (!signal.aborted) {
      if (!lens.paused && (lens.again || Date.now() >= dueAt)) {
        lens.again = false;
        return true;
      }
      const wake = (lens.wake = linkedAbort(signal));
      const ms = lens.paused ? 2 ** 31 - 1 : dueAt - Date.now();
      await sleep(ms, undefined, { signal: wake.signal }).catch(() => {});
      wake.release();
    }
    return false;
  }

  function wake(lens: PolledLens): void {
    lens.wake?.abort();
  }

  /** Polls `lens` on schedule through a supervisor: a failed poll is retried with backoff. */
  function superviseLens(lens: PolledLens): Supervisor {
    return supervise({
      state: (state, detail) => handler.state(state, detail),
      log: log.child({ lens: lens.name }),
      classify,
      initialDelayMs: RETRY_INITIAL_MS,
      maxDelayMs: Math.min(lens.intervalMs, RETRY_MAX_MS),
      reportConnecting: false,
      session: async ({ signal, streaming }) => {
        // Setup errors (missing table or column) stop the start; an unreachable database is retried.
        lens.reader ??= await openLensReader(lens);
        streaming();
        do {
          await poll(lens);
          streaming();
        } while (await nextTurn(lens, signal));
      },
    });
  }

  const scheduled: ScheduledReading = {
    setLensPaused(name, paused) {
      const lens = lenses.get(name);
      if (!lens || lens.paused === paused) return;
      lens.paused = paused;
      if (!paused) {
        lens.again = true; // a resumed lens polls at once
        wake(lens);
      }
    },
    lensPosition(saved, name) {
      const cursor = parseSaved(saved)?.[name];
      return cursor && cursor.value;
    },
    runNow(name) {
      const lens = lenses.get(name);
      if (!lens) return false;
      lens.again = true;
      wake(lens);
      return true;
    },
  };

  return {
    scheduled,
    async start(h, saved) {
      handler = h;
      handler.state('connecting');
      const cursors = parseSaved(saved);
      if (cursors === undefined) log.warn({}, 'the saved position is not a polling cursor (the capture mode changed?): every lens polls from its first row');
      for (const lens of lenses.values()) lens.cursor = cursors?.[lens.name];
      const supervisors = [...lenses.values()].map((lens) => (lens.supervisor = superviseLens(lens)));
      try {
        await Promise.all(supervisors.map((s) => s.started));
      } catch (err) {
        await this.stop();
        throw err;
      }
      // The cursors cover everything: a lens without one starts from its first row.
      return { fresh: false };
    },
    get stopped() {
      const supervisors = [...lenses.values()].flatMap((l) => (l.supervisor ? [l.supervisor] : []));
      if (supervisors.length === 0) return undefined;
      // Each lens polls on its own: the connector stopped for good when every lens did.
      return Promise.all(supervisors.map((s) => s.stopped)).then((errors) => errors.find((e) => e !== undefined));
    },
    acknowledge() {
      // Nothing to release: the pipeline saves the acknowledged cursors.
    },
    pause() {
      if (resumed) return;
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      resumed = { promise, resolve };
    },
    resume() {
      const r = resumed;
      resumed = undefined;
      r?.resolve();
    },
    async stop() {
      stopping = true;
      resumed?.resolve();
      await Promise.all([...lenses.values()].map((l) => l.supervisor?.stop()));
      await Promise.all([...lenses.values()].map((l) => l.reader?.close().catch(() => {})));
    },
  };
}

/** The saved cursors; `{}` without a saved position; undefined when it is not a polling cursor. */
function parseSaved(saved: Position | undefined): Record<string, Cursor> | undefined {
  if (saved === undefined) return {};
  try {
    const parsed: unknown = JSON.parse(saved);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, Cursor>;
  } catch {
    // not JSON: another connector's position
  }
  return undefined;
}

const TIME = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}(?::?\d{2})?)?$/;

/**
 * A time value as the database prints it (`2026-04-20 14:02:03.25+00`, `2026-04-20 14:02:03`),
 * `ms` earlier, in a form the database reads back as the same type; undefined for values that
 * are not times (numeric version columns get no overlap).
 */
export function timeMinus(value: string, ms: number): string | undefined {
  const m = TIME.exec(value);
  if (!m) return undefined;
  const [, date, time, fraction = '', zone] = m;
  const offset = zone === undefined || zone === 'Z' ? 'Z' : zone.length === 3 ? `${zone}:00` : zone.includes(':') ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`;
  const t = Date.parse(`${date}T${time}${fraction.slice(0, 4)}${offset}`);
  if (Number.isNaN(t)) return undefined;
  const iso = new Date(t - ms).toISOString(); // 2026-04-20T14:01:33.250Z
  // An instant keeps its zone (UTC); a local time stays local, in the same clock.
  return zone === undefined ? iso.slice(0, 23).replace('T', ' ') : iso;
}

/** Lenses of a source with `capture: poll` need a changeTrackingColumn and a syncInterval. */
export function pollLensProblems(sourceName: string, lenses: Array<[string, Record<string, unknown>]>): PluginProblem[] {
  const needs = {
    changeTrackingColumn: 'a column every write moves forward, e.g. updated_at',
    syncInterval: 'how often to poll, e.g. 5m',
  };
  return lenses.flatMap(([name, lens]) =>
    Object.entries(needs)
      .filter(([key]) => lens[key] === undefined)
      .map(([key, what]) => ({ path: ['lenses', name, key], message: `source "${sourceName}" has capture: poll, so this lens needs ${key} (${what})` })),
  );
}
