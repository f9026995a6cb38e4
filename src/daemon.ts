/**
 * `tributary run`: wires the configured sources, lenses and sinks into one pipeline per
 * source, serves metrics, writes status for `tributary status`, and drains on stop.
 */
import type { Server } from 'node:http';
import { createConnector } from '../connectors/index.js';
import type { Config } from './config/types.js';
import { describeError } from './errors.js';
import { startMetricsServer } from './http.js';
import { Metrics } from './metrics.js';
import { Pipeline, type LensStatus } from './pipeline.js';
import { createSink } from './sinks/index.js';
import { openStateStore } from './state/index.js';
import type { Logger, Sink, StateStore } from './types.js';
import type { LensWorkerStatus } from './worker/types.js';

/** What `tributary status` reads from the state store under `status`. */
export interface StatusSnapshot {
  pid: number;
  updatedAt: string;
  lenses: Array<LensStatus & { rate: number; worker?: LensWorkerStatus }>;
}

export interface Daemon {
  readonly metrics: Metrics;
  /** Resolves once every source streams (or stands by). */
  readonly started: Promise<void>;
  status(): StatusSnapshot;
  /** Drains and closes everything; resolves with the changes left undelivered. */
  stop(): Promise<number>;
}

const STATUS_INTERVAL_MS = 1000;

export async function startDaemon(config: Config, log: Logger): Promise<Daemon> {
  const state: StateStore = await openStateStore(config.state);
  const metrics = new Metrics();
  // Loaded only when configured: a pipeline to a hosted sink does not pay for the worker's modules.
  const worker = config.worker ? await (await import('./worker/start.js')).startWorker(config, state, metrics, log) : undefined;
  const sinks = new Map<string, Sink>(
    Object.entries(config.sinks).map(([name, sinkConfig]) => [name, createSink(sinkConfig, { engine: worker?.engine })]),
  );
  const pipelines = Object.entries(config.sources).map(([sourceName, sourceConfig]) => {
    const lenses = Object.entries(config.lenses)
      .filter(([, lens]) => lens.source === sourceName)
      .map(([name, lens]) => ({ name, config: lens, sink: sinks.get(lens.sink)! }));
    const sourceLog = log.child({ source: sourceName });
    const connector = createConnector(sourceConfig, {
      sourceName,
      lenses: lenses.map((l) => ({ name: l.name, table: l.config.table, primaryKey: l.config.primaryKey, changeTrackingColumn: l.config.changeTrackingColumn })),
      log: sourceLog,
    });
    return new Pipeline({ sourceName, connector, lenses, settings: config.pipeline, state, metrics, log: sourceLog });
  });

  let startedAll = false;
  const rates = new Map<string, { delivered: number; at: number; rate: number }>();
  const status = (): StatusSnapshot => {
    const at = Date.now();
    const lenses = pipelines.flatMap((p) => p.status()).map((s) => {
      const prev = rates.get(s.lens) ?? { delivered: s.delivered, at, rate: 0 };
      const seconds = (at - prev.at) / 1000;
      const instant = seconds > 0 ? (s.delivered - prev.delivered) / seconds : prev.rate;
      const rate = seconds > 0 ? prev.rate * 0.7 + instant * 0.3 : prev.rate;
      rates.set(s.lens, { delivered: s.delivered, at, rate });
      return { ...s, rate: Math.round(rate * 10) / 10, worker: worker?.engine.status(s.lens)[0] };
    });
    return { pid: process.pid, updatedAt: new Date(at).toISOString(), lenses };
  };

  let server: Server | undefined;
  if (config.metrics) {
    server = await startMetricsServer(config.metrics.listen, metrics, () => {
      const lenses = pipelines.flatMap((p) => p.status());
      const reasons = startedAll ? lenses.filter((l) => !['streaming', 'syncing', 'retrying', 'standby'].includes(l.state)).map((l) => `${l.lens}: ${l.state}${l.lastError ? ` (${l.lastError})` : ''}`) : ['starting'];
      return { ready: reasons.length === 0, reasons };
    });
    log.info({ listen: config.metrics.listen }, 'metrics, /healthz and /readyz listening');
  }

  const statusTimer = setInterval(() => {
    void state.put('status', status()).catch((err) => log.warn({ err: describeError(err) }, 'cannot write status'));
    for (const p of pipelines) void p.savePosition().catch(() => {});
  }, STATUS_INTERVAL_MS);

  const started = Promise.all(pipelines.map((p) => p.start())).then(() => {
    startedAll = true;
    log.info({ sources: pipelines.length, lenses: Object.keys(config.lenses).length }, 'streaming');
  });

  let stopping: Promise<number> | undefined;
  return {
    metrics,
    started,
    status,
    stop() {
      stopping ??= (async () => {
        clearInterval(statusTimer);
        const left = (await Promise.all(pipelines.map((p) => p.drain(config.pipeline.drainTimeoutMs)))).reduce((a, b) => a + b, 0);
        await state.put('status', status()).catch(() => {});
        await Promise.all([...sinks.values()].map((s) => s.close()));
        await worker?.stop();
        await state.close();
        await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
        return left;
      })();
      return stopping;
    },
  };
}
