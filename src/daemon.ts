/**
 * `tributary run`: wires the configured sinks and sources into one pipeline per source, takes
 * each source's lease before reading it (./leases.ts), takes operator requests (./control.ts),
 * serves metrics, `/healthz` and `/readyz`, saves status for `tributary status` (./status.ts),
 * and drains on stop.
 */
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { createConnector, openRowReader, sourceSpec } from '../connectors/index.js';
import type { Config } from './config/types.js';
import { startControl } from './control.js';
import { DeadLetters } from './dead-letters.js';
import { describeError } from './errors.js';
import { startMetricsServer } from './http.js';
import { SourceLeases } from './leases.js';
import { LensStore } from './lens-store.js';
import { Metrics } from './metrics.js';
import { Pipeline, type PipelineOptions } from './pipeline.js';
import { forLens, readsTables, type SinkContext } from './plugins.js';
import { createSink, sinkSpec } from './sinks/index.js';
import { openStateStore } from './state/index.js';
import { StateWrites } from './state-writes.js';
import { Rates, liveness, pipelineStatus, readiness, type SinkLensStatus, type StatusSnapshot } from './status.js';
import type { Logger, Sink, StateStore } from './types.js';
import type { LensWorkerStatus } from './worker/types.js';

export type { StatusSnapshot } from './status.js';

export interface Daemon {
  readonly metrics: Metrics;
  /** Resolves once every source streams (or stands by). */
  readonly started: Promise<void>;
  /**
   * Resolves if a source fails after `started`: its lease was lost (the state store session
   * dropped, so another replica may read it now), or it could not start after taking over
   * from another replica. The caller should stop and exit non-zero.
   */
  readonly failed: Promise<Error>;
  status(): StatusSnapshot;
  /** Drains and closes everything; resolves with the changes left undelivered. */
  stop(): Promise<number>;
}

const STATUS_INTERVAL_MS = 1000;
/** Snapshots of replicas that stopped writing this long ago are removed at start. */
const STALE_STATUS_MS = 3600_000;

export async function startDaemon(config: Config, log: Logger): Promise<Daemon> {
  const state: StateStore = await openStateStore(config.state);
  const metrics = new Metrics();
  const writes = new StateWrites(log);
  const deadLetters = new DeadLetters(state, log);
  await deadLetters.load(Object.keys(config.lenses));
  const sinks = await createSinks(config, { state, deadLetters, metrics, log }).catch(async (err: unknown) => {
    await state.close().catch(() => undefined); // a sink that cannot start (a missing column) leaves nothing open
    throw err;
  });
  const stopConnecting = new AbortController();
  const lensStore = new LensStore(state, writes);
  const pipelines = createPipelines(config, { sinks, state, lensStore, deadLetters, metrics, log, signal: stopConnecting.signal });
  const instance = `${hostname()}:${process.pid}`;
  await pruneStatus(state, log);

  const leases = new SourceLeases(state, metrics, log);
  let startedAll = false;
  const rates = new Rates();
  const status = (): StatusSnapshot => ({
    instance,
    pid: process.pid,
    updatedAt: new Date().toISOString(),
    lenses: pipelines.flatMap((p) => pipelineStatus(p, deadLetters)).map((s) => {
      const sinkName = config.lenses[s.lens].sink;
      const known = sinks.get(sinkName)?.lensStatus?.(s.lens);
      const rate = rates.rate(s.lens, s.delivered);
      if (config.sinks[sinkName].type === 'worker') return { ...s, rate, worker: known as LensWorkerStatus | undefined };
      return { ...s, rate, sink: known as SinkLensStatus | undefined };
    }),
  });

  let server: Server | undefined;
  if (config.metrics) {
    server = await startMetricsServer(config.metrics.listen, metrics, {
      readiness: () => readiness(pipelines.flatMap((p) => pipelineStatus(p, deadLetters)), startedAll, writes.problems()),
      liveness: () => liveness([...leases.active]),
    });
    log.info({ listen: config.metrics.listen }, 'metrics, /healthz and /readyz listening');
  }
  metrics.attachSweeps(() => pipelines.flatMap((p) => [...p.lenses.values()].flatMap((l) => (l.sweeper ? [[l.name, l.sweeper.progress] as const] : []))));
  const control = startControl({ state, active: () => (startedAll ? [...leases.active] : []), deadLetters, log });
  const statusTimer = setInterval(() => {
    void writes.run('status snapshot', () => state.put(`status/${instance}`, status()));
    for (const p of leases.active) void writes.run(`position of source ${p.sourceName}`, () => p.savePosition());
  }, STATUS_INTERVAL_MS);

  const started = Promise.all(pipelines.map((p) => leases.activate(p))).then(() => {
    startedAll = true;
    const standingBy = pipelines.length - leases.active.size;
    log.info({ sources: pipelines.length, standingBy, lenses: Object.keys(config.lenses).length }, standingBy === 0 ? 'streaming' : 'started; standing by');
  });

  let stopping: Promise<number> | undefined;
  return {
    metrics,
    started,
    failed: leases.failed,
    status,
    stop() {
      stopping ??= (async () => {
        clearInterval(statusTimer);
        control.stop();
        leases.abort();
        stopConnecting.abort();
        const drainMs = config.pipeline.drainTimeoutMs;
        const left = (await Promise.all([...leases.active].map((p) => p.drain(drainMs)))).reduce((a, b) => a + b, 0);
        await leases.release();
        await state.put(`status/${instance}`, status()).catch(() => {});
        await closeSinks(sinks, drainMs, log);
        await state.close();
        await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
        return left;
      })();
      return stopping;
    },
  };
}

/** One pipeline per source, with its lenses, their sinks, and the source's connector factory. */
function createPipelines(
  config: Config,
  shared: Pick<PipelineOptions, 'state' | 'lensStore' | 'deadLetters' | 'metrics'> & { sinks: Map<string, Sink>; log: Logger; signal: AbortSignal },
): Pipeline[] {
  const { sinks, log: rootLog, signal, ...common } = shared;
  return Object.entries(config.sources).map(([sourceName, sourceConfig]) => {
    const lenses = Object.entries(config.lenses)
      .filter(([, lens]) => lens.source === sourceName)
      .map(([name, lens]) => ({ name, config: lens, sink: sinks.get(lens.sink)! }));
    const log = rootLog.child({ source: sourceName });
    const connectorLenses = lenses.map((l) => ({ name: l.name, table: l.config.table, primaryKey: l.config.primaryKey, config: l.config }));
    return new Pipeline({
      ...common,
      sourceName,
      connect: (report) => createConnector(sourceConfig, { sourceName, lenses: connectorLenses, log, report, signal }),
      lenses,
      settings: config.pipeline,
      log,
      openReader: readsTables(sourceSpec(sourceConfig.type), sourceConfig) ? (lens) => openRowReader(sourceConfig, lens, config.lenses[lens]) : undefined,
      sharedReading: sourceSpec(sourceConfig.type).capabilities.sharedReading ?? false,
    });
  });
}

async function createSinks(config: Config, shared: Pick<SinkContext, 'state' | 'deadLetters' | 'metrics' | 'log'>): Promise<Map<string, Sink>> {
  const sinks = new Map<string, Sink>();
  try {
    for (const [name, sinkConfig] of Object.entries(config.sinks)) await createOne(name, sinkConfig);
  } catch (err) {
    await closeSinks(sinks, 1000, shared.log);
    throw err;
  }
  return sinks;

  async function createOne(name: string, sinkConfig: Config['sinks'][string]): Promise<void> {
    const takes = sinkSpec(sinkConfig.type).capabilities.takes;
    const openReader = (lens: string) => {
      const source = config.sources[config.lenses[lens].source];
      const forPayload = forLens(takes, config.lenses[lens]) === 'rows';
      return readsTables(sourceSpec(source.type), source) ? openRowReader(source, lens, config.lenses[lens], forPayload) : undefined;
    };
    const lenses = Object.fromEntries(Object.entries(config.lenses).filter(([, lens]) => lens.sink === name));
    const ctx = { ...shared, name, lenses, config, openReader, log: shared.log.child({ sink: name }) };
    sinks.set(name, await createSink(sinkConfig, ctx));
  }
}

/** Closes the sinks, waiting at most `timeoutMs` (a sink that hangs is left to the process exit). */
async function closeSinks(sinks: Map<string, Sink>, timeoutMs: number, log: Logger): Promise<void> {
  const closing = Promise.all([...sinks.values()].map((s) => s.close())).then(() => true);
  const closed = await Promise.race([closing, sleep(Math.max(timeoutMs, 1000)).then(() => false)]);
  if (!closed) log.warn({ timeoutMs }, 'a sink did not close in time; leaving it to the process exit');
}

/** Removes the status snapshots of replicas gone for long (pod names change on every restart). */
async function pruneStatus(state: StateStore, log: Logger): Promise<void> {
  try {
    for (const key of await state.keys('status/')) {
      const snapshot = await state.get<StatusSnapshot>(key);
      if (!snapshot || Date.now() - Date.parse(snapshot.updatedAt) > STALE_STATUS_MS) await state.delete(key);
    }
  } catch (err) {
    log.warn({ err: describeError(err) }, 'cannot prune old status snapshots');
  }
}
