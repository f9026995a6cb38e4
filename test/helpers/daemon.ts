/**
 * Runs Tributary against a throwaway Postgres and a loopback SemiLayer server, in-process
 * (`startTestDaemon`) or as a child process that can be killed (`spawnDaemon`, from ./cli.ts,
 * re-exported here). Its `after` hook stops what a test file left running.
 */
import { after } from 'node:test';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PostgresSourceConfig } from '../../connectors/postgres/spec.js';
import type { Config, LensConfig } from '../../src/config/types.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { killChildren } from './cli.js';

export { eventually, killChildren, runCli, spawnCli, spawnDaemon, stopDaemon, type ChildDaemon } from './cli.js';

export interface TestConfigOptions {
  dbUrl: string;
  sinkUrl: string;
  key?: string;
  /** Lens name → table and overrides. */
  lenses: Record<string, Partial<LensConfig> & { table: string }>;
  dataDir?: string;
  slot?: string;
  pipeline?: Partial<Config['pipeline']>;
}

/** A config whose one source, `app`, is Postgres (tests set its capture mode and url). */
export type TestConfig = Config & { sources: { app: PostgresSourceConfig } };

export function testConfig(o: TestConfigOptions): TestConfig {
  const lenses: Record<string, LensConfig> = {};
  for (const [name, lens] of Object.entries(o.lenses)) {
    lenses[name] = { source: 'app', sink: 'hosted', fields: [], metadata: [], initialSync: 'full', maxBatch: 10_000, maxWaitMs: 20, ...lens };
    if (!lens.table.includes('.')) lenses[name].table = `public.${lens.table}`;
  }
  return {
    sources: {
      app: { type: 'postgres', url: o.dbUrl, capture: 'logical', slot: o.slot ?? 'tributary_app', publication: 'tributary_app', statusIntervalMs: 1000, installTriggers: true, triggerSchema: 'tributary' },
    },
    lenses,
    sinks: { hosted: { type: 'semilayer', url: o.sinkUrl, key: o.key ?? 'ik_test', timeoutMs: 5000 } },
    state: { type: 'embedded', path: o.dataDir ?? mkdtempSync(join(tmpdir(), 'tributary-state-')) },
    metrics: null,
    pipeline: { maxPendingChanges: 20_000, maxPendingBytes: 64 << 20, drainTimeoutMs: 5000, errorRetryMs: 300, ...o.pipeline },
    log: { level: 'warn' },
    worker: null,
  };
}

export async function startTestDaemon(config: Config): Promise<Daemon> {
  const log = createLogger({ level: process.env.TRIBUTARY_TEST_LOG ?? 'fatal' });
  const daemon = await startDaemon(config, log);
  running.add(daemon);
  await daemon.started;
  return daemon;
}

/** Starts a daemon that must fail to start; resolves with its error message. */
export async function startError(config: Config): Promise<string> {
  const daemon = await startDaemon(config, createLogger({ level: 'fatal' }));
  try {
    await daemon.started;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await daemon.stop();
  }
  throw new Error('the daemon started although it should not have');
}

/** In-process daemons, stopped after the file's tests so a failed test cannot keep its process alive. */
const running = new Set<Daemon>();
after(async () => {
  killChildren();
  await Promise.all([...running].map((d) => d.stop()));
});
