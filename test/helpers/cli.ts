/**
 * The tributary CLI as a child process (`spawnCli`, `runCli`, `spawnDaemon`) and `eventually`:
 * free of node:test, so scripts (npm run demo) can use them without starting the test runner.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

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

/** SIGTERM to a child daemon: it must drain and exit 0 (its output is the failure message). */
export async function stopDaemon(daemon: ChildDaemon): Promise<void> {
  daemon.child.kill('SIGTERM');
  const code = await daemon.exited;
  if (code !== 0) throw new Error(`the daemon exited ${code} on SIGTERM:\n${daemon.output()}`);
}

/** Kills every daemon this process spawned and has not seen exit (for `after` hooks). */
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

/**
 * Waits (up to 30 s) until a worker search of `lens` at `apiPort` ranks `id` first for `query`;
 * on timeout the test fails with the daemon's output.
 */
export function topHit(apiPort: number, key: string, daemon: ChildDaemon, lens = 'products') {
  const search = async (query: string) => {
    const res = await fetch(`http://127.0.0.1:${apiPort}/v1/search/${lens}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ query, limit: 1 }),
      signal: AbortSignal.timeout(2000),
    }).catch(() => undefined);
    return res?.ok ? ((await res.json()) as { results: Array<{ sourceRowId: string }> }).results : [];
  };
  return (query: string, id: string, what: string): Promise<void> =>
    eventually(async () => (await search(query))[0]?.sourceRowId === id, what, 30_000).catch((err: Error) => assert.fail(`${err.message}\n${daemon.output()}`));
}

