/**
 * What an operator sees: one line a lens (`tributary status`, saved to the state store under
 * `status/<instance>` every second), readiness (`/readyz`) and liveness (`/healthz`).
 */
import type { DeadLetters } from './dead-letters.js';
import type { Readiness } from './http.js';
import type { LensState } from './lens-runtime.js';
import type { Pipeline } from './pipeline.js';
import type { SweepProgress } from './sweep.js';
import type { Position } from './types.js';
import type { LensWorkerStatus } from './worker/types.js';

export interface LensStatus {
  lens: string;
  source: string;
  state: LensState;
  /** The source's last acknowledged position (a polling lens: its own cursor). */
  position?: Position;
  pending: number;
  delivered: number;
  captured: number;
  dlq: number;
  lastError?: string;
  /** A sync is queued or in flight, and why. */
  fullSync?: string;
  /** The capture mode `capture: auto` chose for the source, and why. */
  capture?: { mode: string; reason: string };
  /** Paused by an operator (`tributary pause`). */
  paused: boolean;
  /** Streams read in parts (Kinesis shards): each part's lag behind the tip, ms. */
  partLagMs?: Record<string, number>;
  /** Streams read by offsets (Kafka partitions this replica owns): messages not yet committed. */
  partMessagesBehind?: Record<string, number>;
  /** Smart sync sweeps of the lens, when it has smartSyncInterval. */
  sweep?: SweepProgress;
}

/** What `tributary status` reads from the state store. */
export interface StatusSnapshot {
  /** `host:pid` of the daemon; each replica saves its snapshot under `status/<instance>`. */
  instance: string;
  pid: number;
  updatedAt: string;
  lenses: Array<LensStatus & { rate: number; worker?: LensWorkerStatus; sink?: SinkLensStatus }>;
}

/** What a payload sink reports of a lens (`Sink.lensStatus`, src/payload.ts and the sinks). */
export interface SinkLensStatus {
  fullSync?: { state: 'running' | 'done'; rows: number; startedAt: string; finishedAt?: string };
  /** seyn: deletes counted and not sent (`onDelete: skip`); its last batchId. */
  skippedDeletes?: number;
  lastBatchId?: string;
  /** psykhe: the last ingestion_id, and the soft_replace deletes scheduled. */
  lastIngestionId?: number | string;
  resyncAt?: string;
  resyncError?: string;
}

/** States in which a lens is doing its job (or standing by for another replica). */
const READY_STATES: readonly LensState[] = ['streaming', 'syncing', 'retrying', 'standby'];

/** The status of every lens of a pipeline. */
export function pipelineStatus(pipeline: Pipeline, deadLetters: DeadLetters): LensStatus[] {
  const sourceDown = pipeline.sourceState !== 'streaming';
  const scheduled = pipeline.connector?.scheduled;
  return [...pipeline.lenses.values()].map((lens) => {
    lens.counters.pending = lens.pending;
    const state: LensState = lens.paused ? 'paused' : lens.owed ? 'error' : sourceDown && lens.state !== 'error' ? pipeline.sourceState : lens.state;
    const healthy = lens.state === 'streaming' && !sourceDown;
    return {
      lens: lens.name,
      source: pipeline.sourceName,
      state,
      position: pipeline.position !== undefined && scheduled ? scheduled.lensPosition(pipeline.position, lens.name) : pipeline.position,
      pending: lens.pending,
      delivered: lens.counters.delivered,
      captured: lens.counters.captured,
      dlq: deadLetters.count(lens.name),
      lastError: lens.owed ?? (healthy ? undefined : ((sourceDown ? pipeline.sourceDetail : undefined) ?? lens.lastError)),
      fullSync: lens.sync?.reason ?? (lens.inFlight?.kind === 'sync' ? lens.inFlight.reason : undefined),
      capture: pipeline.captureMode,
      paused: lens.paused,
      partLagMs: pipeline.connector?.partLag?.(),
      partMessagesBehind: pipeline.connector?.partMessagesBehind?.(),
      sweep: lens.sweeper && { ...lens.sweeper.progress },
    };
  });
}

/** Smoothed delivery rates per lens, from successive status readings. */
export class Rates {
  private readonly last = new Map<string, { delivered: number; at: number; rate: number }>();

  /** The lens's rate in rows/s, one decimal. */
  rate(lens: string, delivered: number, at = Date.now()): number {
    const prev = this.last.get(lens) ?? { delivered, at, rate: 0 };
    const seconds = (at - prev.at) / 1000;
    const rate = seconds > 0 ? prev.rate * 0.7 + ((delivered - prev.delivered) / seconds) * 0.3 : prev.rate;
    this.last.set(lens, { delivered, at, rate });
    return Math.round(rate * 10) / 10;
  }
}

/** Ready when every lens is at work (or standing by) and the state store takes writes. */
export function readiness(lenses: LensStatus[], started: boolean, stateProblems: string[]): Readiness {
  if (!started) return { ready: false, reasons: ['starting'] };
  const reasons = lenses.filter((l) => !READY_STATES.includes(l.state)).map((l) => `${l.lens}: ${l.state}${l.lastError ? ` (${l.lastError})` : ''}`);
  return { ready: reasons.length + stateProblems.length === 0, reasons: [...reasons, ...stateProblems] };
}

/**
 * Alive unless a source's connector stopped for good (it will not reconnect by itself), so an
 * orchestrator restarts a daemon that is doing nothing.
 */
export function liveness(pipelines: Pipeline[]): Readiness {
  const reasons = pipelines.filter((p) => p.stoppedWith).map((p) => `source ${p.sourceName} stopped: ${p.stoppedWith!.message}`);
  return { ready: reasons.length === 0, reasons };
}
