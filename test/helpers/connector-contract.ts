/**
 * The connector contract: one suite every source connector and capture mode passes, driving the
 * real connector in-process (created through its spec, `createConnector`) with a recording
 * SourceHandler. A fixture says how to make an isolated source (its own database) and write to it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createConnector } from '../../connectors/index.js';
import type { LensConfig, SourceConfig } from '../../src/config/types.js';
import { createLogger } from '../../src/log.js';
import type { ConnectorContext, Position, RejectedRecord, SourceChange, SourceConnector, SourceHandler, SourceState } from '../../src/types.js';
import { eventually } from './daemon.js';

const log = createLogger({ level: process.env.TRIBUTARY_TEST_LOG ?? 'fatal' });

/** A SourceHandler that records everything, in order. It acknowledges nothing by itself. */
export class Recorder implements SourceHandler {
  readonly events: Array<{ change: SourceChange } | { checkpoint: Position }> = [];
  readonly states: Array<{ state: SourceState; detail?: string }> = [];
  readonly resyncs: Array<{ lens: string; reason: string }> = [];
  readonly owed: Array<{ lens: string; reason: string }> = [];
  readonly captures: Array<{ mode: string; reason: string }> = [];
  readonly unmatchedTables: Array<{ table: string; advice: string }> = [];
  readonly rejected: RejectedRecord[] = [];

  change(change: SourceChange): void {
    this.events.push({ change });
  }
  checkpoint(position: Position): void {
    this.events.push({ checkpoint: position });
  }
  resync(lens: string, reason: string): void {
    this.resyncs.push({ lens, reason });
  }
  fullSyncOwed(lens: string, reason: string): void {
    this.owed.push({ lens, reason });
  }
  unmatched(table: string, advice: string): void {
    this.unmatchedTables.push({ table, advice });
  }
  reject(record: RejectedRecord): void {
    this.rejected.push(record);
  }
  state(state: SourceState, detail?: string): void {
    this.states.push({ state, detail });
  }
  capture(mode: string, reason: string): void {
    this.captures.push({ mode, reason });
  }

  /** The ids of every upsert reported, in order (duplicates kept). */
  ids(): string[] {
    return this.events.flatMap((e) => ('change' in e && e.change.action === 'upsert' ? [e.change.id] : []));
  }

  /** The newest checkpoint that follows every change reported so far (undefined if none does yet). */
  covering(): Position | undefined {
    const last = this.events[this.events.length - 1];
    return last && 'checkpoint' in last ? last.checkpoint : undefined;
  }
}

/** One isolated source of a fixture: its config, its one lens, and a way to write rows. */
export interface ContractSource {
  config: SourceConfig;
  lens: { name: string; table: string; primaryKey?: string[]; config: LensConfig };
  /** Inserts rows with these ids into the lens table, in one transaction. */
  insert(ids: number[]): Promise<void>;
}

export interface ConnectorFixture {
  /** The suite's title, e.g. `postgres logical`. */
  name: string;
  /** A fresh database (or schema) for one test, named from `testName`. */
  source(testName: string): Promise<ContractSource>;
  /** The connector resumes from the `saved` position (polling cursors, binlog); else it keeps its own place (slot, changelog). */
  resumesFromSaved: boolean;
  /** The capture mode `capture: auto` must hand over, for the auto fixture. */
  handsOver?: string;
}

/** A lens config with the defaults the config loader would fill in. */
export function lensConfig(source: string, table: string, extra: Partial<LensConfig> = {}): LensConfig {
  return { source, table, sink: 'hosted', fields: [], metadata: [], initialSync: 'none', maxBatch: 10_000, maxWaitMs: 20, ...extra };
}

/** Time a change may take from commit to the handler (polling reads every second). */
const DELIVERY_MS = 15_000;
/** How long a paused connector is watched for changes it should not report. */
const QUIET_MS = 2_500;
/** `stop()` must resolve within this. */
const STOP_MS = 5_000;

/** Runs the contract suite against `fixture`. */
export function connectorContract(fixture: ConnectorFixture): void {
  describe(`connector contract: ${fixture.name}`, () => {
    /** Creates the connector through its spec and starts it; returns it with its recorder. */
    async function open(src: ContractSource, saved?: Position) {
      const rec = new Recorder();
      const ctx: ConnectorContext = { sourceName: 'app', lenses: [src.lens], log, report: rec };
      const connector = await createConnector(src.config, ctx);
      const started = await connector.start(rec, saved);
      assert.ok(rec.states.some((s) => s.state === 'streaming'), 'reports streaming once started');
      return { rec, connector, started };
    }

    async function stopPromptly(connector: SourceConnector): Promise<void> {
      const t0 = Date.now();
      await connector.stop();
      assert.ok(Date.now() - t0 < STOP_MS, `stop() took ${Date.now() - t0} ms`);
    }

    const seen = (rec: Recorder, ids: number[]) => eventually(() => ids.every((id) => rec.ids().includes(String(id))), `ids ${ids.join(', ')}`, DELIVERY_MS);

    test(`${fixture.name}: starts from nothing and delivers what is written after start`, async (t) => {
      const src = await fixture.source(t.name);
      const { rec, connector } = await open(src);
      if (fixture.handsOver) assert.equal(rec.captures[0]?.mode, fixture.handsOver, 'capture: auto reports the mode it handed over to');
      await src.insert([1, 2]);
      await seen(rec, [1, 2]);
      await eventually(() => rec.covering() !== undefined, 'a checkpoint covering them', DELIVERY_MS);
      await stopPromptly(connector);
    });

    test(`${fixture.name}: acknowledges only what it was told; a restart replays the rest and not the acknowledged`, async (t) => {
      const src = await fixture.source(t.name);
      let { rec, connector } = await open(src);
      await src.insert([1, 2]);
      await seen(rec, [1, 2]);
      await eventually(() => rec.covering() !== undefined, 'a checkpoint after 1 and 2', DELIVERY_MS);
      const first = rec.covering()!;
      connector.acknowledge(first);
      await src.insert([3]);
      await seen(rec, [3]);
      await eventually(() => rec.covering() !== undefined, 'a checkpoint after 3', DELIVERY_MS);
      await stopPromptly(connector); // the checkpoint after 3 was reported, never acknowledged

      // Restart: 3 was not acknowledged, so it comes again; 1 and 2 were, so they do not.
      ({ rec, connector } = await open(src, fixture.resumesFromSaved ? first : undefined));
      await seen(rec, [3]);
      await eventually(() => rec.covering() !== undefined, 'a checkpoint after the replay', DELIVERY_MS);
      assert.deepEqual(rec.ids().filter((id) => id === '1' || id === '2'), [], 'acknowledged changes are not replayed');
      const all = rec.covering()!;
      connector.acknowledge(all);
      await stopPromptly(connector);

      // Restart after acknowledging everything: nothing comes again; new writes do.
      ({ rec, connector } = await open(src, fixture.resumesFromSaved ? all : undefined));
      await src.insert([4]);
      await seen(rec, [4]);
      assert.deepEqual(rec.ids().filter((id) => id !== '4'), [], 'nothing acknowledged is replayed');
      await stopPromptly(connector);
    });

    test(`${fixture.name}: pause() holds new changes back and resume() brings them`, async (t) => {
      const src = await fixture.source(t.name);
      const { rec, connector } = await open(src);
      await src.insert([1]);
      await seen(rec, [1]);
      connector.pause();
      await sleep(200); // a read already under way may still report
      const before = rec.ids().length;
      await src.insert([2]);
      await sleep(QUIET_MS);
      assert.equal(rec.ids().length, before, 'nothing new while paused');
      connector.resume();
      await seen(rec, [2]);
      await stopPromptly(connector);
    });
  });
}
