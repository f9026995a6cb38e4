/**
 * Starts the bundled worker of a configuration: its embedder, index, engine (one durable
 * queue per lens whose sink is the worker) and, when `worker.listen` is set, its HTTP API.
 */
import type { Server } from 'node:http';
import { join } from 'node:path';
import { TributaryError } from '../errors.js';
import type { SinkContext } from '../plugins.js';
import { createEmbedder } from './embedders/index.js';
import { Engine } from './engine.js';
import { checkExposure, startWorkerServer } from './http.js';
import { openVectorIndex } from './index/index.js';

export interface RunningWorker {
  engine: Engine;
  server?: Server;
  stop(): Promise<void>;
}

/** Starts the worker of a configuration with worker sinks, for the lenses of all of them. */
export async function startWorker({ config, state, deadLetters, metrics, log, openReader }: SinkContext): Promise<RunningWorker> {
  const workerConfig = config.worker!;
  if (workerConfig.listen) checkExposure(workerConfig.listen, workerConfig.keys);
  const lenses = Object.fromEntries(Object.entries(config.lenses).filter(([, lens]) => config.sinks[lens.sink]?.type === 'worker'));
  const index = await openVectorIndex(workerConfig.index);
  const engine = new Engine({
    lenses,
    openReader: (lens) => openReader(lens) ?? Promise.reject(new TributaryError(`lens "${lens}": the worker re-reads rows, and its source reads no tables`)),
    embedder: createEmbedder(workerConfig.embedder),
    index,
    state,
    deadLetters,
    queueDir: join(workerConfig.index.path, 'queue'),
    maxQueuedChanges: workerConfig.maxQueuedChanges,
    readBatch: workerConfig.readBatch,
    log: log.child({ component: 'worker' }),
    observe: {
      embedSeconds: (lens, seconds) => metrics.embedSeconds.observe({ lens }, seconds),
      freshnessSeconds: (lens, seconds) => metrics.freshness.observe({ lens }, seconds),
    },
  });
  metrics.attachWorker(engine);
  await engine.start();
  // refresh() never rejects: it logs its failures (throttled) and shows persistent ones in status.
  const refresh = setInterval(() => void engine.refresh(), 1000);
  refresh.unref();
  let server: Server | undefined;
  if (workerConfig.listen) {
    server = await startWorkerServer(workerConfig.listen, { engine, keys: workerConfig.keys });
    log.info({ listen: workerConfig.listen, lenses: Object.keys(lenses) }, 'worker API listening');
  }
  return {
    engine,
    server,
    async stop() {
      clearInterval(refresh);
      await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
      await engine.stop();
      await index.close();
    },
  };
}
