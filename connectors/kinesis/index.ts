/**
 * The Kinesis connector: reads every shard of a stream of AWS DMS or Debezium change records
 * (./dms.ts, ./debezium.ts) and reports the changes of the lens tables, each with its row.
 *
 * - One supervised session (src/supervisor.ts) for the source: it lists the shards, reads each
 *   ready shard in its own loop, and lists again every `shardRefreshMs` or when a shard ends.
 *   Any failure but throttling ends the session; the supervisor reconnects with backoff and
 *   the shards resume from the last reported records.
 * - Order: a child shard (after a split or merge) is read only once its parents were read to
 *   their end and that end was checkpointed, so one key's changes keep their order.
 * - Rate: at most one GetRecords a shard every 200 ms (Kinesis allows 5 a second); an idle
 *   shard is read every `pollIntervalMs`; throttling waits with backoff (src/retry.ts); an
 *   expired iterator is renewed after the last reported record.
 * - Position (./position.ts): each shard's last sequence number, checkpointed after every
 *   GetRecords batch's changes were reported. Kinesis keeps no reader state, so `start` resumes
 *   from the position the pipeline saved (acknowledged): records after it come again.
 */
import { GetRecordsCommand, GetShardIteratorCommand, type GetShardIteratorCommandInput, type KinesisClient, type _Record } from '@aws-sdk/client-kinesis';
import { setTimeout as sleep } from 'node:timers/promises';
import { retry } from '../../src/retry.js';
import { supervise, type Session, type Supervisor } from '../../src/supervisor.js';
import type { ConnectorContext, SourceConnector, SourceHandler } from '../../src/types.js';
import { classifyKinesisError, isExpiredIterator, isThrottle, kinesisClient } from './client.js';
import { debeziumDecoder } from '../json-records/debezium.js';
import type { Decoded, Decoder } from '../json-records/decoded.js';
import { dmsDecoder } from './dms.js';
import { jsonRowId } from '../json-records/json-ids.js';
import { formatPosition, parsePosition, prune, type KinesisPosition } from './position.js';
import { listShards, readyShards } from './shards.js';
import type { KinesisSourceConfig } from './spec.js';

/** Kinesis allows 5 GetRecords a second per shard. */
const MIN_READ_INTERVAL_MS = 200;
/** Throttled calls wait between these, ms (jittered, exponential). */
const THROTTLE_BACKOFF = { initialMs: 500, maxMs: 10_000 };

interface LensKey {
  lens: string;
  key: string[];
}

export function createKinesisConnector(config: KinesisSourceConfig, ctx: ConnectorContext): SourceConnector {
  const where = `source "${ctx.sourceName}" (stream ${config.stream})`;
  const log = ctx.log;
  const decode: Decoder = config.format === 'dms' ? dmsDecoder(config.beforeImageField) : debeziumDecoder;
  const lensesByTable = new Map<string, LensKey[]>();
  for (const l of ctx.lenses) {
    const list = lensesByTable.get(l.table) ?? [];
    list.push({ lens: l.name, key: l.primaryKey ?? [] });
    lensesByTable.set(l.table, list);
  }
  let client: KinesisClient | undefined;
  let handler: SourceHandler;
  let supervisor: Supervisor | undefined;
  /** What has been reported to the handler: where the next session resumes. */
  let position: KinesisPosition;
  const lagByShard = new Map<string, number>();
  let skippedRecords = 0;
  let paused = false;
  let resumed = () => {};
  let whenResumed = Promise.resolve();

  /** Reports one record's changes. */
  function report(record: _Record, shardId: string): void {
    const raw = Buffer.from(record.Data ?? new Uint8Array()).toString('utf8');
    const place = `${shardId}@${record.SequenceNumber}`;
    const decoded = decode(raw);
    const committedAt = record.ApproximateArrivalTimestamp?.getTime() ?? Date.now();
    if (decoded.kind === 'skip') return;
    if (decoded.kind === 'invalid') {
      const lenses = decoded.table ? lensesByTable.get(decoded.table) : undefined;
      if (decoded.table && !lenses) return void skippedRecords++;
      for (const lens of lenses ?? [undefined]) handler.reject({ lens: lens?.lens, reason: decoded.reason, raw, where: place });
      return;
    }
    const lenses = lensesByTable.get(decoded.table);
    if (!lenses) return void skippedRecords++;
    if (decoded.kind === 'truncate') {
      for (const { lens } of lenses) handler.resync(lens, `${decoded.table} was truncated (${place})`);
      return;
    }
    for (const lens of lenses) changeOf(decoded, lens, { raw, place, at: decoded.committedAt ?? committedAt });
  }

  /** One lens's change(s) for a decoded row change: a key change is a delete of the old id, then the upsert. */
  function changeOf(d: Extract<Decoded, { kind: 'change' }>, { lens, key }: LensKey, r: { raw: string; place: string; at: number }): void {
    const id = jsonRowId(d.keyRow, key);
    if (id === undefined) {
      handler.reject({ lens, reason: `the record lacks the key column(s) ${key.join(', ')} of lens ${lens}`, raw: r.raw, where: r.place });
      return;
    }
    const oldId = d.before && jsonRowId(d.before, key);
    if (oldId !== undefined && oldId !== id) handler.change({ lens, id: oldId, action: 'delete', committedAt: r.at, row: null });
    handler.change({ lens, id, action: d.action, committedAt: r.at, row: d.row });
  }

  /** Waits `ms` unless `signal` aborts first. */
  const wait = (ms: number, signal: AbortSignal) => sleep(ms, undefined, { signal }).catch(() => {});

  /** Resolves once reading is not paused (or `signal` aborted). */
  async function unpaused(signal: AbortSignal): Promise<void> {
    while (paused && !signal.aborted) {
      await Promise.race([whenResumed, wait(1000, signal)]);
    }
  }

  /** An iterator after the shard's last reported record (or at its start). */
  async function iteratorFor(shardId: string, signal: AbortSignal): Promise<string | undefined> {
    const seq = position.shards[shardId];
    const input: GetShardIteratorCommandInput = { StreamName: config.stream, ShardId: shardId, ShardIteratorType: 'TRIM_HORIZON' };
    if (seq) Object.assign(input, { ShardIteratorType: 'AFTER_SEQUENCE_NUMBER', StartingSequenceNumber: seq });
    else if (position.since !== undefined) Object.assign(input, { ShardIteratorType: 'AT_TIMESTAMP', Timestamp: new Date(position.since) });
    const out = await throttled(() => client!.send(new GetShardIteratorCommand(input), { abortSignal: signal }), signal);
    return out.ShardIterator;
  }

  /** Runs a call again after throttling (with backoff); other errors go up. */
  function throttled<T>(call: () => Promise<T>, signal: AbortSignal): Promise<T> {
    return retry(call, { ...THROTTLE_BACKOFF, signal, retriable: isThrottle, onRetry: (err, attempt, delayMs) => log.debug({ attempt, delayMs: Math.round(delayMs) }, 'Kinesis throttled a call; waiting') });
  }

  /** Reads one shard until its end (resolves) or a failure (throws), reporting and checkpointing each batch. */
  async function readShard(shardId: string, session: Session, signal: AbortSignal): Promise<void> {
    let iterator = await iteratorFor(shardId, signal);
    let lastRead = 0;
    while (iterator && !signal.aborted) {
      await unpaused(signal);
      await wait(lastRead + MIN_READ_INTERVAL_MS - Date.now(), signal);
      if (signal.aborted) return;
      lastRead = Date.now();
      let out;
      try {
        const input = { ShardIterator: iterator, Limit: config.recordsPerRead };
        out = await throttled(() => client!.send(new GetRecordsCommand(input), { abortSignal: signal }), signal);
      } catch (err) {
        if (!isExpiredIterator(err) || signal.aborted) throw err;
        iterator = await iteratorFor(shardId, signal);
        continue;
      }
      session.streaming();
      lagByShard.set(shardId, out.MillisBehindLatest ?? 0);
      const records = out.Records ?? [];
      for (const record of records) {
        report(record, shardId);
        position.shards[shardId] = record.SequenceNumber!;
      }
      iterator = out.NextShardIterator;
      if (!iterator) {
        position.done.push(shardId);
        lagByShard.delete(shardId);
        log.info({ shard: shardId }, 'shard read to its end');
      }
      if (records.length > 0 || !iterator) handler.checkpoint(formatPosition(position));
      if (records.length === 0 && iterator && !out.MillisBehindLatest) await wait(config.pollIntervalMs, signal);
    }
  }

  /** One session: reads every ready shard, and lists the shards again on a timer or when one ends. */
  async function readStream(session: Session): Promise<void> {
    client ??= kinesisClient(config);
    const abort = new AbortController();
    const stop = () => abort.abort();
    session.signal.addEventListener('abort', stop);
    const reading = new Map<string, Promise<void>>();
    let failure: { err: unknown } | undefined;
    try {
      while (!abort.signal.aborted) {
        const shards = await throttled(() => listShards(client!, config.stream, abort.signal), abort.signal);
        prune(position, new Set(shards.map((s) => s.id)));
        session.streaming();
        for (const shard of readyShards(shards, new Set(position.done), new Set(reading.keys()))) {
          const read = readShard(shard.id, session, abort.signal).then(
            () => void reading.delete(shard.id),
            (err) => {
              failure ??= { err };
              abort.abort();
            },
          );
          reading.set(shard.id, read);
        }
        await Promise.race([...reading.values(), wait(config.shardRefreshMs, abort.signal)]);
      }
      if (failure) throw failure.err;
    } finally {
      abort.abort();
      session.signal.removeEventListener('abort', stop);
      await Promise.allSettled(reading.values());
    }
  }

  return {
    async start(h, saved) {
      handler = h;
      position = saved !== undefined ? parsePosition(saved, where) : { shards: {}, done: [], ...(config.startAt === 'latest' ? { since: Date.now() } : {}) };
      let first = true;
      supervisor = supervise({
        state: (state, detail) => handler.state(state, detail),
        log,
        classify: (err) => classifyKinesisError(err, where),
        session: async (session) => {
          if (first) {
            // The starting place is saved at once: a first start at `latest` resumes from it.
            first = false;
            handler.checkpoint(formatPosition(position));
          }
          await readStream(session);
        },
      });
      await supervisor.started;
      log.info({ stream: config.stream, format: config.format, tables: [...lensesByTable.keys()], fresh: saved === undefined }, 'reading the stream');
      return { fresh: saved === undefined };
    },

    get stopped() {
      return supervisor?.stopped;
    },

    // The pipeline saves acknowledged positions (`position/<source>`); the stream keeps no reader state.
    acknowledge() {},

    pause() {
      if (paused) return;
      paused = true;
      whenResumed = new Promise((resolve) => (resumed = resolve));
    },

    resume() {
      paused = false;
      resumed();
    },

    async lag() {
      return { lagMs: Math.max(0, ...lagByShard.values()), skippedRecords };
    },

    partLag() {
      return Object.fromEntries([...lagByShard].sort(([a], [b]) => a.localeCompare(b)));
    },

    async stop() {
      await supervisor?.stop();
      client?.destroy();
    },
  };
}
