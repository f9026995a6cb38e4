/**
 * `tributary run`: wires the configured sources, lenses and sinks into one pipeline per
 * source, serves metrics, writes status for `tributary status`, and drains on stop.
 *
 * Replicas: each source's pipeline starts only once this process holds the source's lease in
 * the state store (`StateStore.lease`), so with several replicas sharing a postgres state store
 * exactly one reads each source and the others stand by (state `standby`, gauge
 * `tributary_source_active` 0) until the active one dies.
 */
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { createConnector, openRowReader } from '../connectors/index.js';
import type { Config } from './config/types.js';
import { describeError } from './errors.js';
import { startMetricsServer } from './http.js';
import { Metrics } from './metrics.js';
import { Pipeline, type LensStatus, type PipelineOptions } from './pipeline.js';
import { createSink } from './sinks/index.js';
import { openStateStore } from './state/index.js';
import type { Lease, Logger, Sink, StateStore } from './types.js';
import type { LensWorkerStatus } from './worker/types.js';

/** What `tributary status` reads from the state store under `status`. */
export interface StatusSnapshot {
  /** `host:pid` of the daemon; each replica saves its snapshot under `status/<instance>`. */
  instance: string;
  pid: number;
  updatedAt: string;
  lenses: Array<LensStatus & { rate: number; worker?: LensWorkerStatus }>;
}

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
/** How often the daemon takes operator requests from the state store. */
const CONTROL_INTERVAL_MS = 1000;

export async function startDaemon(config: Config, log: Logger): Promise<Daemon> {
  const state: StateStore = await openStateStore(config.state);
  const metrics = new Metrics();
  const openReader = (lens: string) => openRowReader(config.sources[config.lenses[lens].source], lens, config.lenses[lens]);
  const sinks = new Map<string, Sink>();
  for (const [name, sinkConfig] of Object.entries(config.sinks)) {
    const lenses = Object.fromEntries(Object.entries(config.lenses).filter(([, lens]) => lens.sink === name));
    sinks.set(name, await createSink(sinkConfig, { name, lenses, config, openReader, state, metrics, log: log.child({ sink: name }) }));
  }
  const stopConnecting = new AbortController();
  const pipelines = Object.entries(config.sources).map(([sourceName, sourceConfig]) => {
    const lenses = Object.entries(config.lenses)
      .filter(([, lens]) => lens.source === sourceName)
      .map(([name, lens]) => ({ name, config: lens, sink: sinks.get(lens.sink)! }));
    const sourceLog = log.child({ source: sourceName });
    const connectorLenses = lenses.map((l) => ({ name: l.name, table: l.config.table, primaryKey: l.config.primaryKey, config: l.config }));
    const connect = (report: Parameters<PipelineOptions['connect']>[0]) =>
      createConnector(sourceConfig, { sourceName, lenses: connectorLenses, log: sourceLog, report, signal: stopConnecting.signal });
    return new Pipeline({ sourceName, connect, lenses, settings: config.pipeline, state, metrics, log: sourceLog, openReader: (name) => openReader(name) });
  });
  const instance = `${hostname()}:${process.pid}`;
  const statusKey = `status/${instance}`;
  await pruneStatus(state, log);

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
      const worker = sinks.get(config.lenses[s.lens].sink)?.lensStatus?.(s.lens) as LensWorkerStatus | undefined;
      return { ...s, rate: Math.round(rate * 10) / 10, worker };
    });
    return { instance, pid: process.pid, updatedAt: new Date(at).toISOString(), lenses };
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

  metrics.attachSweeps(() => pipelines.flatMap((p) => p.sweeps()));

  // Operator requests (`tributary pause|resume|ingest`) arrive through the state store. A
  // replica takes them only while it reads a source, and passes on those for sources it does not.
  let controlBusy = false;
  const controlTimer = setInterval(() => {
    if (controlBusy || !startedAll || active.size === 0) return;
    controlBusy = true;
    state
      .takeRequests()
      .then(async (requests) => {
        for (const request of requests) {
          if (request.expiresAt !== undefined && request.expiresAt < Date.now()) {
            log.warn({ lens: request.lens, request: request.kind }, 'operator request expired before the daemon saw it (the CLI gave up); ignored');
            continue;
          }
          const pipeline = pipelines.find((p) => p.hasLens(request.lens));
          if (!pipeline) log.warn({ lens: request.lens, request: request.kind }, 'operator request for a lens this daemon does not run; ignored');
          else if (active.has(pipeline)) pipeline.control(request);
          else await state.sendRequest(request);
        }
      })
      .catch((err) => log.warn({ err: describeError(err) }, 'cannot read operator requests'))
      .finally(() => (controlBusy = false));
  }, CONTROL_INTERVAL_MS);

  const statusTimer = setInterval(() => {
    void state.put(statusKey, status()).catch((err) => log.warn({ err: describeError(err) }, 'cannot write status'));
    for (const p of pipelines) void p.savePosition().catch(() => {});
  }, STATUS_INTERVAL_MS);

  // Each source: take its lease (standing by while another replica holds it), then start.
  const stopLeases = new AbortController();
  const leases: Lease[] = [];
  const active = new Set<Pipeline>();
  let onFailed!: (err: Error) => void;
  const failed = new Promise<Error>((resolve) => (onFailed = resolve));
  const activate = (p: Pipeline) =>
    new Promise<void>((resolve, reject) => {
      let standingBy = false;
      const waiting = () => {
        standingBy = true;
        metrics.source(p.sourceName).active = false;
        p.state('standby', `another replica reads source ${p.sourceName}; taking over when it stops`);
        log.info({ source: p.sourceName }, 'another replica reads this source; standing by');
        resolve();
      };
      state.lease(`source/${p.sourceName}`, { signal: stopLeases.signal, waiting }).then(async (lease) => {
        leases.push(lease);
        void lease.lost.then(onFailed);
        active.add(p);
        metrics.source(p.sourceName).active = true;
        log.info({ source: p.sourceName }, 'holding the source lease; starting');
        await p.start();
      }).then(resolve, (err) => {
        if (stopLeases.signal.aborted) return;
        if (standingBy) onFailed(err);
        else reject(err);
      });
    });
  const started = Promise.all(pipelines.map(activate)).then(() => {
    startedAll = true;
    const standingBy = pipelines.length - active.size;
    log.info({ sources: pipelines.length, standingBy, lenses: Object.keys(config.lenses).length }, standingBy === 0 ? 'streaming' : 'started; standing by');
  });

  let stopping: Promise<number> | undefined;
  return {
    metrics,
    started,
    failed,
    status,
    stop() {
      stopping ??= (async () => {
        clearInterval(statusTimer);
        clearInterval(controlTimer);
        stopLeases.abort();
        stopConnecting.abort();
        const left = (await Promise.all([...active].map((p) => p.drain(config.pipeline.drainTimeoutMs)))).reduce((a, b) => a + b, 0);
        await Promise.all(leases.map((l) => l.release()));
        await state.put(statusKey, status()).catch(() => {});
        await Promise.all([...sinks.values()].map((s) => s.close()));
        await state.close();
        await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
        return left;
      })();
      return stopping;
    },
  };
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
