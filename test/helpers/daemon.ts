/**
 * Runs Tributary against a throwaway Postgres and a loopback SemiLayer server, in-process
 * (`startTestDaemon`) or as a child process that can be killed (`spawnDaemon`).
 */
import { after } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PostgresSourceConfig } from '../../connectors/postgres/spec.js';
import type { Config, LensConfig } from '../../src/config/types.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';

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

/** Polls `predicate` until it holds, or fails after `timeoutMs` with `what`. */
export async function eventually(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const CLI = resolve(import.meta.dirname, '../../src/cli.js');
/** The node flags of the CLI's `#!` line, so children run exactly as the installed bin does. */
const NODE_FLAGS = (readFileSync(CLI, 'utf8').split('\n')[0].match(/\bnode\s+(.*)$/)?.[1] ?? '').split(/\s+/).filter(Boolean);

export interface ChildDaemon {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Writes `yaml` to a temp file and runs `tributary run` on it in a child process. */
export function spawnDaemon(yaml: string, env: NodeJS.ProcessEnv = {}): ChildDaemon {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-cfg-'));
  const file = join(dir, 'tributary.yaml');
  writeFileSync(file, yaml);
  return spawnCli(['run', '--config', file], env);
}

const children = new Set<ChildProcess>();
process.on('exit', () => killChildren());

/** Kills every daemon this process spawned and has not seen exit (for `after` hooks). */
/** SIGTERM to a child daemon: it must drain and exit 0 (its output is the failure message). */
export async function stopDaemon(daemon: ChildDaemon): Promise<void> {
  daemon.child.kill('SIGTERM');
  const code = await daemon.exited;
  if (code !== 0) throw new Error(`the daemon exited ${code} on SIGTERM:\n${daemon.output()}`);
}

export function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
}

export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): ChildDaemon {
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI, ...args], { env: { ...process.env, ...env }, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (input !== undefined) child.stdin!.end(input);
  children.add(child);
  child.on('exit', () => children.delete(child));
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

/** Runs the CLI to completion (with `input` on its stdin) and returns its exit code and output. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): Promise<{ code: number | null; output: string }> {
  const c = spawnCli(args, env, input);
  const code = await c.exited;
  return { code, output: c.output() };
}
