/**
 * Small helpers for the benchmark: progress lines, cleanup on any exit, a Tributary child
 * process with its /metrics, pg_recvlogical as the reference reader, and statistics.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnCli } from '../test/helpers/cli.js';
import { freePort } from '../test/helpers/postgres.js';

export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

// ---- progress and cleanup ------------------------------------------------------------------

const t0 = performance.now();
export function progress(line: string): void {
  console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${line}`);
}

/** Daemon configs and state directories; removed on any exit of the bench. */
const benchDir = mkdtempSync(join(tmpdir(), 'tributary-bench-'));

/** Child processes still running; killed on any exit of the bench. */
const children = new Set<ChildProcess>();
function track(child: ChildProcess): void {
  children.add(child);
  child.on('exit', () => children.delete(child));
}
export function killChildren(): void {
  for (const child of children) if (child.pid) child.kill('SIGKILL');
}
process.on('exit', () => {
  killChildren();
  rmSync(benchDir, { recursive: true, force: true });
});

// ---- the results table ---------------------------------------------------------------------------

/** One row of the results table. */
export interface Row {
  metric: string;
  tributary: string;
  reference: string;
  goal: string;
  pass: 'yes' | 'no' | 'info';
}

// ---- formatting --------------------------------------------------------------------------------

export const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/** Waits until `predicate()` holds, polling every `everyMs`; throws `what` after `timeoutMs`. */
export async function until(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs: number, everyMs = 5): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await predicate())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

export const MB = 1024 * 1024;

/**
 * Waits until the loopback sink counted `backlog` changes of `lens`, printing the count and the
 * daemon's peak RSS every 3 s.
 */
export async function catchUp(counted: (lens: string) => number, lens: string, d: RunningDaemon, backlog: number, timeoutMs: number): Promise<void> {
  let lastReport = performance.now();
  await until(
    () => {
      if (performance.now() - lastReport > 3000) {
        lastReport = performance.now();
        progress(`  caught up ${fmt(counted(lens))} / ${fmt(backlog)}, peak RSS so far ${fmt(d.peakRss() / MB)} MB`);
      }
      return counted(lens) >= backlog;
    },
    `${fmt(backlog)} changes at the sink`,
    timeoutMs,
    20,
  );
}

// ---- the daemon as a child process ---------------------------------------------------------------

export interface DaemonOptions {
  dbUrl: string;
  sinkUrl: string;
  /** Used as slot and publication name. */
  slot: string;
  lens: string;
  table: string;
  maxWaitMs: number;
  maxBatch?: number;
  /** Reuse a state directory (a second start of the same pipeline). */
  stateDir?: string;
}

export interface RunningDaemon {
  pid: number;
  stateDir: string;
  /** ms from spawn until the daemon logged `streaming`. */
  ready: Promise<number>;
  metrics(): Promise<Map<string, number>>;
  /** Peak resident set size so far, bytes (VmHWM). */
  peakRss(): number;
  /** CPU time used so far (user + system), seconds. */
  cpuSeconds(): number;
  /** SIGTERM (drain), then waits for the exit; returns the exit code. */
  stop(): Promise<number | null>;
  output(): string;
}

export async function startDaemonChild(o: DaemonOptions): Promise<RunningDaemon> {
  const stateDir = o.stateDir ?? tempDir('state-');
  const metricsPort = await freePort();
  const yaml = `
sources:
  app:
    type: postgres
    url: ${o.dbUrl}
    slot: ${o.slot}
    publication: ${o.slot}
    statusIntervalMs: 1000
lenses:
  ${o.lens}:
    source: app
    table: public.${o.table}
    sink: loopback
    initialSync: none
    maxBatch: ${o.maxBatch ?? 10000}
    maxWaitMs: ${o.maxWaitMs}
sinks:
  loopback: { type: semilayer, url: ${o.sinkUrl}, key: ik_test, timeoutMs: 30000 }
state: { type: embedded, path: ${stateDir} }
metrics: { listen: 127.0.0.1:${metricsPort} }
log: { level: info }
`;
  return spawnDaemonYaml(yaml, metricsPort, stateDir);
}

/** /proc's unit of CPU time (USER_HZ: 100 on Linux). */
const CLOCK_TICKS = 100;

/** A fresh directory under the bench's temp directory (removed on exit). */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(benchDir, prefix));
}

/** Runs `tributary run` on `yaml`, whose metrics listen on 127.0.0.1:`metricsPort`. */
export function spawnDaemonYaml(yaml: string, metricsPort: number, stateDir: string): RunningDaemon {
  const started = performance.now();
  const configFile = join(tempDir('config-'), 'tributary.yaml');
  writeFileSync(configFile, yaml);
  const d = spawnCli(['run', '--config', configFile]);
  track(d.child);
  const pid = d.child.pid!;
  const ready = new Promise<number>((resolve, reject) => {
    const onData = () => {
      if (d.output().includes('"msg":"streaming"')) {
        d.child.stdout!.off('data', onData);
        resolve(performance.now() - started);
      }
    };
    d.child.stdout!.on('data', onData);
    void d.exited.then((code) => reject(new Error(`daemon exited (${code}) before streaming:\n${d.output()}`)));
  });
  ready.catch(() => {}); // observed by callers; avoid an unhandled rejection after a normal stop
  return {
    pid,
    stateDir,
    ready,
    output: d.output,
    async metrics() {
      return parseMetrics(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
    },
    peakRss() {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
      return kb * 1024;
    },
    cpuSeconds() {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [utime, stime] = stat.slice(stat.lastIndexOf(')') + 2).split(' ').slice(11, 13).map(Number);
      return (utime + stime) / CLOCK_TICKS;
    },
    async stop() {
      if (d.child.exitCode !== null) return d.child.exitCode;
      d.child.kill('SIGTERM');
      const code = await Promise.race([d.exited, sleep(30_000, undefined, { ref: false }).then(() => 'timeout' as const)]);
      if (code === 'timeout') {
        d.child.kill('SIGKILL');
        throw new Error(`daemon did not exit within 30 s of SIGTERM:\n${d.output().slice(-2000)}`);
      }
      return code;
    },
  };
}

/**
 * Spawns a daemon on `yaml`, waits until it delivered a backlog of `backlog` changes of lens
 * `lens` (counted by `counted`), stops it, prints a progress line and returns the rates (from
 * spawn, and once streaming) and its peak RSS.
 */
export async function timeBacklog(yaml: string, metricsPort: number, stateDir: string, counted: (lens: string) => number, lens: string, backlog: number) {
  const spawned = performance.now();
  const d = spawnDaemonYaml(yaml, metricsPort, stateDir);
  const readyMs = await d.ready;
  await catchUp(counted, lens, d, backlog, 600_000);
  const seconds = (performance.now() - spawned) / 1000;
  const rss = d.peakRss();
  await d.stop();
  const rate = backlog / seconds;
  const streamingRate = backlog / (seconds - readyMs / 1000);
  progress(`  the daemon delivered them in ${seconds.toFixed(1)} s from spawn (ready after ${(readyMs / 1000).toFixed(2)} s): ${fmt(rate)} changes/s, ${fmt(streamingRate)} once streaming, peak RSS ${fmt(rss / MB, 1)} MB`);
  return { rate, streamingRate, rss };
}

/** Prometheus text → `series{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

/** Quantile `q` of histogram `name` of `lens`, as the upper bound of its bucket (s). */
export function histogramQuantile(metrics: Map<string, number>, name: string, lens: string, q: number): number {
  const buckets: Array<[number, number]> = [];
  for (const [series, value] of metrics) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)",lens="${lens}"\\}$`).exec(series);
    if (m) buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), value]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets[buckets.length - 1]?.[1] ?? 0;
  return buckets.find(([, count]) => count >= q * total)?.[0] ?? NaN;
}

// ---- the reference: pg_recvlogical ----------------------------------------------------------------

function pgUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
}

/** Reads `slot` up to `endpos` with pg_recvlogical (pgoutput v1, output discarded); returns seconds. */
export async function timeRecvlogical(dbUrl: string, slot: string, publication: string, endpos: string): Promise<number> {
  const args = ['-d', dbUrl, '--slot', slot, '--start', '-P', 'pgoutput', '-o', 'proto_version=1', '-o', `publication_names=${publication}`];
  args.push(`--endpos=${endpos}`, '--no-loop', '-f', '/dev/null');
  const started = performance.now();
  const child = spawn(join(PG_BIN, 'pg_recvlogical'), args, { ...pgUser(), stdio: ['ignore', 'ignore', 'pipe'] });
  track(child);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`pg_recvlogical exited with ${code}: ${stderr}`);
  return seconds;
}
