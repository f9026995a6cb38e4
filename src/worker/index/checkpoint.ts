/**
 * The files of the embedded index's lenses, and its checkpoints.
 *
 * - `<lens>.<gen>.log`: the record log (./frames.ts); a compaction writes generation gen + 1.
 * - `<lens>.<seq>.hnsw`: the HNSW graph (usearch's own format) as of operation `seq`.
 * - `<lens>.<seq>.state`: JSON: the slot table and keyword index as of operation `seq`, the log
 *   generation and the byte length of the log they reflect, and the graph's settings.
 *
 * A checkpoint is committed by renaming its `.state` file into place, after its `.hnsw`; both
 * are written to `.tmp` files and fsynced first. Opening takes the newest committed checkpoint,
 * replays its log from the recorded length, and deletes every other file of the lens: so a
 * crash at any instant reopens to the last fsynced write.
 */
import { open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDirectory } from '../../files.js';
import type { HnswSettings } from './hnsw.js';
import type { SlotTable } from './lens-data.js';
import { LENS_NAME } from './checks.js';

export interface CheckpointState extends SlotTable {
  version: 1;
  gen: number;
  logBytes: number;
  /** Frames in that log (live records and superseded ones), for compaction. */
  frames: number;
  /** The next operation number of the lens. */
  nextSeq: number;
  hnsw: HnswSettings;
}

/** The files of one lens found in the index directory. */
export interface LensFiles {
  logs: Map<number, string>;
  /** Checkpoints by seq: which of their two files exist. */
  checkpoints: Map<number, { state?: string; hnsw?: string }>;
  /** Everything else of the lens (leftover `.tmp` files). */
  other: string[];
}

/** Groups the directory's file names by lens; names of no lens are left out. */
export function lensFiles(names: string[]): Map<string, LensFiles> {
  const out = new Map<string, LensFiles>();
  for (const name of names) {
    const parts = name.split('.');
    if (!LENS_NAME.test(parts[0]) || parts.length < 2) continue;
    let files = out.get(parts[0]);
    if (!files) out.set(parts[0], (files = { logs: new Map(), checkpoints: new Map(), other: [] }));
    const n = Number(parts[1]);
    const kind = parts.length === 3 && Number.isSafeInteger(n) && n >= 0 ? parts[2] : undefined;
    if (kind === 'log') files.logs.set(n, name);
    else if (kind === 'state' || kind === 'hnsw') {
      const entry = files.checkpoints.get(n) ?? {};
      entry[kind] = name;
      files.checkpoints.set(n, entry);
    } else files.other.push(name);
  }
  return out;
}

export function logName(lens: string, gen: number): string {
  return `${lens}.${gen}.log`;
}

export function graphName(lens: string, seq: number): string {
  return `${lens}.${seq}.hnsw`;
}

/** Writes `bytes` to `path` through an fsynced `.tmp` file renamed into place. */
async function writeDurably(path: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${path}.tmp`;
  await write(tmp);
  const file = await open(tmp, 'r+');
  try {
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
}

/**
 * Commits a checkpoint of `lens` at `seq`: the graph (saved by `saveGraph` to the path it is
 * given; nothing for an empty lens) and then the state. Resolves once both are durable.
 */
export async function writeCheckpoint(dir: string, lens: string, seq: number, state: CheckpointState, saveGraph?: (path: string) => void): Promise<void> {
  if (saveGraph) await writeDurably(join(dir, graphName(lens, seq)), async (tmp) => saveGraph(tmp));
  await writeDurably(join(dir, `${lens}.${seq}.state`), async (tmp) => {
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(JSON.stringify(state));
    } finally {
      await file.close();
    }
  });
  await syncDirectory(dir);
}

/** The newest committed checkpoint of a lens and its seq, or undefined. */
export async function readCheckpoint(dir: string, files: LensFiles): Promise<{ seq: number; state: CheckpointState } | undefined> {
  const committed = [...files.checkpoints].filter(([, f]) => f.state).sort((a, b) => b[0] - a[0]);
  if (committed.length === 0) return undefined;
  const [seq, f] = committed[0];
  const state = JSON.parse(await readFile(join(dir, f.state!), 'utf8')) as CheckpointState;
  if (state.version !== 1) throw new Error(`${f.state} has version ${String(state.version)}; this Tributary reads version 1`);
  return { seq, state };
}

/** Deletes every file of a lens but the log `gen` and the checkpoint `seq`. */
export async function removeOthers(dir: string, files: LensFiles, gen: number, seq: number | undefined): Promise<void> {
  const doomed = [...files.other];
  for (const [g, name] of files.logs) if (g !== gen) doomed.push(name);
  for (const [s, f] of files.checkpoints) if (s !== seq) doomed.push(...[f.state, f.hnsw].filter((n): n is string => n !== undefined));
  for (const name of doomed) await rm(join(dir, name), { force: true });
}
