/**
 * The files of the embedded index's lenses, and its checkpoints.
 *
 * - `<lens>.<gen>.log`: the record log (./frames.ts); a compaction writes generation gen + 1.
 * - `<lens>.<seq>.hnsw`: the HNSW graph (usearch's own format) as of operation `seq`.
 * - `<lens>.<seq>.state`: binary (see `encodeState`): the slot table and keyword index as of
 *   operation `seq`, the log generation and the byte length of the log they reflect, and the
 *   graph's settings.
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
  gen: number;
  logBytes: number;
  /** Frames in that log (live records and superseded ones), for compaction. */
  frames: number;
  /** The next operation number of the lens. */
  nextSeq: number;
  hnsw: HnswSettings;
  /** Graph keys of records not yet in the saved graph. */
  pending: number[];
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
 * given, which answers the keys the saved graph lacks; nothing for an empty lens) and then the
 * state. Resolves once both are durable.
 */
export async function writeCheckpoint(
  dir: string,
  lens: string,
  seq: number,
  table: Omit<CheckpointState, 'pending'>,
  saveGraph?: (path: string) => Promise<number[]>,
): Promise<void> {
  let pending: number[] = [];
  if (saveGraph) await writeDurably(join(dir, graphName(lens, seq)), async (tmp) => void (pending = await saveGraph(tmp)));
  const state: CheckpointState = { ...table, pending };
  await writeDurably(join(dir, `${lens}.${seq}.state`), async (tmp) => {
    const file = await open(tmp, 'w');
    try {
      for (const chunk of encodeState(state)) await file.write(chunk);
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
  return { seq, state: decodeState(f.state!, await readFile(join(dir, f.state!))) };
}

const MAGIC = Buffer.from('TRIBUTARY-INDEX-STATE-2\n');
/** Strings and numbers are written this many to a chunk. */
const PER_CHUNK = 65_536;

/**
 * The state as chunks to write one after the other: MAGIC, a u32-length-prefixed JSON header
 * (the scalars and the count of each list), the ids and hashes (each a u32 byte length and
 * UTF-8), offsets, keys and pending keys (f64 each), then the keyword index's own bytes to the
 * end of the file (it checks its own length).
 * Little-endian; chunks are made as they are written, none more than a slice of the table.
 */
function* encodeState(state: CheckpointState): Generator<Buffer> {
  const { ids, hashes, offsets, keys, pending, bm25, ...scalars } = state;
  const header = Buffer.from(JSON.stringify({ ...scalars, count: ids.length, pending: pending.length }));
  yield* [MAGIC, u32(header.length), header];
  yield* stringChunks(ids);
  yield* stringChunks(hashes);
  for (const values of [offsets, keys, pending]) yield* f64Chunks(values);
  yield* bm25;
}

function decodeState(name: string, bytes: Buffer): CheckpointState {
  if (!bytes.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error(`${name} is not a checkpoint this Tributary reads (an older format)`);
  let at = MAGIC.length;
  const headerLength = bytes.readUInt32LE(at);
  const header = JSON.parse(bytes.toString('utf8', at + 4, at + 4 + headerLength)) as Omit<CheckpointState, 'ids' | 'hashes' | 'offsets' | 'keys' | 'pending' | 'bm25'> & {
    count: number;
    pending: number;
  };
  at += 4 + headerLength;
  const strings = (n: number): string[] => {
    const out = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const length = bytes.readUInt32LE(at);
      out[i] = bytes.toString('utf8', at + 4, at + 4 + length);
      at += 4 + length;
    }
    return out;
  };
  const numbers = (n: number): number[] => {
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++, at += 8) out[i] = bytes.readDoubleLE(at);
    return out;
  };
  const { count, pending, ...scalars } = header;
  const state = { ...scalars, ids: strings(count), hashes: strings(count), offsets: numbers(count), keys: numbers(count), pending: numbers(pending) };
  return { ...state, bm25: [bytes.subarray(at)] };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function* f64Chunks(values: number[]): Generator<Buffer> {
  for (let from = 0; from < values.length; from += PER_CHUNK) {
    const slice = values.slice(from, from + PER_CHUNK);
    const b = Buffer.alloc(slice.length * 8);
    slice.forEach((v, i) => b.writeDoubleLE(v, i * 8));
    yield b;
  }
}

function* stringChunks(values: string[]): Generator<Buffer> {
  for (let from = 0; from < values.length; from += PER_CHUNK) {
    const slice = values.slice(from, from + PER_CHUNK);
    const b = Buffer.alloc(slice.reduce((n, s) => n + 4 + Buffer.byteLength(s), 0));
    let at = 0;
    for (const s of slice) {
      const length = b.write(s, at + 4);
      b.writeUInt32LE(length, at);
      at += 4 + length;
    }
    yield b;
  }
}

/** Deletes every file of a lens but the log `gen` and the checkpoint `seq`. */
export async function removeOthers(dir: string, files: LensFiles, gen: number, seq: number | undefined): Promise<void> {
  const doomed = [...files.other];
  for (const [g, name] of files.logs) if (g !== gen) doomed.push(name);
  for (const [s, f] of files.checkpoints) if (s !== seq) doomed.push(...[f.state, f.hnsw].filter((n): n is string => n !== undefined));
  for (const name of doomed) await rm(join(dir, name), { force: true });
}
