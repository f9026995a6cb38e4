/**
 * The pipeline's delivery loop, with a source and a sink in memory: for a sink that reads rows
 * (`Sink.prepare`), the batch after the one in flight is taken early and handed to the sink,
 * delivered only once the one in flight is accepted, and the source's position never passes
 * a batch not yet accepted.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import type { LensConfig, PipelineConfig } from '../src/config/types.js';
import { DeadLetters } from '../src/dead-letters.js';
import { LensStore } from '../src/lens-store.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import { Pipeline } from '../src/pipeline.js';
import { StateWrites } from '../src/state-writes.js';
import { openStateStore } from '../src/state/index.js';
import type { RecordChange, Sink, SourceConnector, SourceHandler } from '../src/types.js';

const dirs: string[] = [];
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** A sink whose writes wait until the test accepts them. */
class HeldSink implements Sink {
  readonly writes: RecordChange[][] = [];
  readonly prepared: RecordChange[][] = [];
  private readonly accepts: Array<() => void> = [];

  constructor(readonly reads: boolean) {
    if (!reads) delete (this as Partial<Sink>).prepare;
  }

  write(_lens: string, changes: RecordChange[]): Promise<void> {
    this.writes.push(changes);
    return new Promise((resolve) => this.accepts.push(resolve));
  }
  prepare(_lens: string, changes: RecordChange[]): void {
    this.prepared.push(changes);
  }
  /** Accepts the oldest write still held. */
  async accept(): Promise<void> {
    this.accepts.shift()!();
    await tick();
    await tick();
  }
  readonly syncs: string[] = [];
  requestFullSync(lens: string): Promise<void> {
    this.syncs.push(lens);
    return new Promise((resolve) => this.accepts.push(resolve));
  }
  requestIncrementalSync = async () => undefined;
  close = async () => undefined;
}

async function pipelineWith(sink: HeldSink) {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-pipeline-'));
  dirs.push(dir);
  const state = await openStateStore({ type: 'embedded', path: dir });
  const log = createLogger({ level: 'silent' });
  const acknowledged: string[] = [];
  let handler!: SourceHandler;
  const connector: SourceConnector = {
    async start(h) {
      handler = h;
      return { fresh: false };
    },
    acknowledge: (position) => acknowledged.push(position),
    pause: () => undefined,
    resume: () => undefined,
    stop: async () => undefined,
  };
  const config = { source: 's', table: 'public.t', fields: [], metadata: [], sink: 'k', initialSync: 'none', maxBatch: 3, maxWaitMs: 60_000 } as LensConfig;
  const settings: PipelineConfig = { maxPendingChanges: 20_000, maxPendingBytes: 64 * 1024 * 1024, drainTimeoutMs: 5000, errorRetryMs: 60_000 };
  const pipeline = new Pipeline({
    sourceName: 's',
    connect: async () => connector,
    lenses: [{ name: 'l', config, sink }],
    settings,
    state,
    lensStore: new LensStore(state, new StateWrites(log)),
    deadLetters: new DeadLetters(state, log),
    metrics: new Metrics(),
    log,
  });
  await pipeline.start();
  const changes = (...ids: string[]) => ids.forEach((id) => handler.change({ lens: 'l', id, action: 'upsert', committedAt: Date.now() }));
  /** Drains (every write must have been accepted) and closes the state store. */
  const close = async () => {
    assert.equal(await pipeline.drain(5000), 0);
    await state.close();
  };
  return { pipeline, state, handler, changes, acknowledged, close };
}

const ids = (changes: RecordChange[]) => changes.map((c) => c.id);

test('a sink that reads rows is handed the next batch while one is in flight; it is written after, and the position waits for it', async () => {
  const sink = new HeldSink(true);
  const { handler, changes, acknowledged, close } = await pipelineWith(sink);
  changes('a', 'b', 'c');
  handler.checkpoint('p1');
  assert.deepEqual(sink.writes.map(ids), [['a', 'b', 'c']]);
  changes('d', 'e', 'f');
  handler.checkpoint('p2');
  assert.deepEqual(sink.prepared.map(ids), [['d', 'e', 'f']], 'the next batch is prepared at once');
  assert.equal(sink.writes.length, 1, 'and not written while the first is in flight');
  // Taken early, the batch is sealed: a newer change of d waits for the batch after it.
  changes('d', 'g');
  handler.checkpoint('p3');
  assert.deepEqual(acknowledged, []);

  await sink.accept();
  assert.equal(sink.writes[1], sink.prepared[0], 'the prepared array itself is written');
  assert.deepEqual(acknowledged, ['p1'], 'the prepared batch holds the position');

  await sink.accept();
  assert.deepEqual(acknowledged, ['p1', 'p2']);
  assert.equal(sink.writes.length, 2, 'two changes are not a batch due');
  changes('h');
  assert.deepEqual(ids(sink.writes[2]), ['d', 'g', 'h'], 'the newer change of d goes again');
  await sink.accept();
  assert.deepEqual(acknowledged, ['p1', 'p2', 'p3']);
  await close();
});

test('once the batch taken early goes out, a full batch waiting behind it is taken early in turn (no new change needed)', async () => {
  const sink = new HeldSink(true);
  const { changes, close } = await pipelineWith(sink);
  changes('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i');
  assert.deepEqual(sink.prepared.map(ids), [['d', 'e', 'f']]);
  await sink.accept();
  assert.deepEqual(sink.writes.map(ids), [['a', 'b', 'c'], ['d', 'e', 'f']]);
  assert.deepEqual(sink.prepared.map(ids), [['d', 'e', 'f'], ['g', 'h', 'i']]);
  await sink.accept();
  await sink.accept();
  await close();
});

test('no batch is taken early behind a full sync, queued or in flight: its rows would wait for the whole sync', async () => {
  const sink = new HeldSink(true);
  const { pipeline, changes, close } = await pipelineWith(sink);
  changes('a', 'b', 'c');
  pipeline.resync('l', 'a test');
  changes('d', 'e', 'f');
  assert.equal(sink.prepared.length, 0, 'a sync is queued');
  await sink.accept();
  assert.deepEqual(sink.syncs, ['l']);
  changes('g', 'h', 'i');
  assert.equal(sink.prepared.length, 0, 'a sync is in flight');
  await sink.accept();
  assert.deepEqual(sink.writes.map(ids).slice(1), [['d', 'e', 'f']]);
  assert.deepEqual(sink.prepared.map(ids), [['g', 'h', 'i']], 'behind records, the next batch is taken early again');
  await sink.accept();
  await sink.accept();
  await close();
});

test('a batch taken early and not accepted by the end of a drain is not acknowledged: it replays on the next start', async () => {
  const sink = new HeldSink(true);
  const { pipeline, state, handler, changes, acknowledged } = await pipelineWith(sink);
  changes('a', 'b', 'c');
  handler.checkpoint('p1');
  changes('d', 'e', 'f');
  handler.checkpoint('p2');
  assert.equal(sink.prepared.length, 1);
  const left = pipeline.drain(300);
  await sink.accept();
  assert.deepEqual(sink.writes[1], sink.prepared[0]);
  assert.equal(await left, 3, 'its changes are counted as undelivered');
  assert.deepEqual(acknowledged, ['p1']);
  await state.close();
});

test('a sink that only writes keeps coalescing the next batch until the one in flight is accepted', async () => {
  const sink = new HeldSink(false);
  const { changes, close } = await pipelineWith(sink);
  changes('a', 'b', 'c');
  changes('d', 'e');
  changes('d');
  await sink.accept();
  assert.deepEqual(sink.writes.map(ids), [['a', 'b', 'c']], 'two changes are not a batch due');
  changes('f');
  assert.equal(sink.writes.length, 2);
  assert.deepEqual(ids(sink.writes[1]).sort(), ['d', 'e', 'f'], 'd once');
  assert.equal(sink.prepared.length, 0);
  await sink.accept();
  await close();
});
