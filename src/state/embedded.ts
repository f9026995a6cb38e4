/**
 * The embedded state store: plain files in one directory.
 *
 * - `state.json`: every key/value, rewritten atomically on each (coalesced) put.
 * - `dead-letters.jsonl`: one dead letter a line, appended and fsynced; removals rewrite it.
 * - `tributary.lock`: the pid of the one process allowed to write the directory.
 * - `snapshots/<name>/<bucket>.jsonl`: sweep snapshots, one `["id","hash"]` a line
 *   (a version being written is `snapshots/<name>.next/`).
 * - `requests/<id>.json`: operator requests from the CLI, written atomically by any process
 *   (also beside the lock holder), taken and removed by the daemon.
 */
import { randomBytes } from 'node:crypto';
import { access, appendFile, mkdir, open, readFile, readdir, realpath, rename, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { TributaryError } from '../errors.js';
import { lockDirectory, syncDirectory } from '../files.js';

const LOCK = {
  file: 'tributary.lock',
  kind: 'the state directory',
  owner: 'Tributary daemon',
  setting: 'state.path',
  besides: '`tributary status` and `tributary dlq list` can run beside it.',
};
import { isExpired, type ControlRequest, type DeadLetter, type Lease, type SnapshotEntry, type SnapshotStore, type SnapshotWriter, type StateStore } from '../types.js';

const STATE_FILE = 'state.json';
const DEAD_LETTER_FILE = 'dead-letters.jsonl';
const SNAPSHOT_DIR = 'snapshots';
const REQUEST_DIR = 'requests';


/**
 * State in a local directory, for a single daemon (`state: { type: embedded, path }`).
 *
 * A writable store takes `tributary.lock` and keeps everything in memory, so reads are cheap;
 * every `put` resolves once `state.json` holding its value is on disk. Puts that arrive while a
 * write is in progress share the next write. A read-only store (for `status` and `dlq list`
 * beside a running daemon) takes no lock, re-reads the files on every read and refuses writes.
 */
/** Requests this process sent (orders those of one millisecond). */
let requestsSent = 0;

export class EmbeddedStateStore implements StateStore {
  private values = new Map<string, unknown>();
  private letters: DeadLetter[] = [];
  private lastId = { time: 0, counter: 0 };
  private closed = false;
  private readonly stateWriter = new CoalescingWriter(() => this.writeState());
  /** Dead-letter file operations, one at a time. */
  private letterQueue: Promise<unknown> = Promise.resolve();
  readonly snapshots: SnapshotStore;

  private constructor(
    /** The state directory, absolute. */
    readonly dir: string,
    readonly readOnly: boolean,
  ) {
    this.snapshots = new FileSnapshots(join(dir, SNAPSHOT_DIR));
  }

  /** Releases the directory lock (writable stores only). */
  private unlock: () => Promise<void> = async () => {};

  /** Opens (creating if missing) the directory `path`; see the class comment for `readOnly`. */
  static async open(path: string, options: { readOnly?: boolean } = {}): Promise<EmbeddedStateStore> {
    if (options.readOnly) return new EmbeddedStateStore(resolve(path), true);
    await mkdir(path, { recursive: true });
    const store = new EmbeddedStateStore(await realpath(path), false);
    store.unlock = await lockDirectory(store.dir, LOCK);
    try {
      await store.load();
    } catch (err) {
      await store.unlock();
      throw err;
    }
    return store;
  }

  async get<T>(key: string): Promise<T | undefined> {
    this.assertOpen();
    const values = this.readOnly ? await readState(this.dir) : this.values;
    const value = values.get(key);
    return value === undefined ? undefined : (structuredClone(value) as T);
  }

  async put(key: string, value: unknown): Promise<void> {
    this.assertWritable();
    this.values.set(key, toJson(key, value));
    await this.stateWriter.request();
  }

  async patch(key: string, fields: Record<string, unknown>): Promise<void> {
    this.assertWritable();
    const value = this.values.get(key);
    const base = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
    this.values.set(key, toJson(key, { ...base, ...fields }));
    await this.stateWriter.request();
  }

  async keys(prefix: string): Promise<string[]> {
    this.assertOpen();
    const values = this.readOnly ? await readState(this.dir) : this.values;
    return [...values.keys()].filter((key) => key.startsWith(prefix));
  }

  async delete(key: string): Promise<void> {
    this.assertWritable();
    if (this.values.delete(key)) await this.stateWriter.request();
  }

  /** The directory lock already makes this the only process using the store: held at once. */
  async lease(): Promise<Lease> {
    this.assertWritable();
    return { lost: new Promise<Error>(() => {}), release: async () => {} };
  }

  async addDeadLetter(letter: Omit<DeadLetter, 'id'>): Promise<DeadLetter> {
    this.assertWritable();
    const stored: DeadLetter = { id: this.nextId(), ...(toJson('dead letter', letter) as Omit<DeadLetter, 'id'>) };
    await this.onLetterFile(async () => {
      await appendDurably(join(this.dir, DEAD_LETTER_FILE), JSON.stringify(stored) + '\n');
      this.letters.push(stored);
    });
    return structuredClone(stored);
  }

  async listDeadLetters(lens?: string, page?: { after?: string; limit: number }): Promise<DeadLetter[]> {
    this.assertOpen();
    const letters = this.readOnly ? await readDeadLetters(this.dir) : this.letters;
    const after = page?.after;
    const chosen = letters.filter((l) => (lens === undefined || l.lens === lens) && (after === undefined || l.id > after));
    return structuredClone(page ? chosen.slice(0, page.limit) : chosen);
  }

  async countDeadLetters(lenses: string[]): Promise<Map<string, number>> {
    const counts = new Map(lenses.map((lens) => [lens, 0]));
    this.assertOpen();
    for (const letter of this.readOnly ? await readDeadLetters(this.dir) : this.letters) if (counts.has(letter.lens)) counts.set(letter.lens, counts.get(letter.lens)! + 1);
    return counts;
  }

  async removeDeadLetters(ids: string[]): Promise<number> {
    this.assertWritable();
    return this.onLetterFile(async () => {
      const drop = new Set(ids);
      const kept = this.letters.filter((l) => !drop.has(l.id));
      const removed = this.letters.length - kept.length;
      if (removed > 0) {
        await writeAtomically(join(this.dir, DEAD_LETTER_FILE), kept.map((l) => JSON.stringify(l) + '\n').join(''));
        this.letters = kept;
      }
      return removed;
    });
  }

  async sendRequest(request: ControlRequest): Promise<string> {
    this.assertOpen();
    const dir = join(this.dir, REQUEST_DIR);
    try {
      await access(dir);
    } catch {
      throw new TributaryError(`No Tributary daemon has run with the state directory ${this.dir} (it has no ${REQUEST_DIR}/ folder); start one with \`tributary run\``);
    }
    // Sorted by name, oldest first: the time, then this process's count (two in one millisecond).
    const id = `${String(Date.now()).padStart(13, '0')}-${process.pid}-${String(++requestsSent).padStart(10, '0')}-${randomBytes(4).toString('hex')}`;
    await writeAtomically(join(dir, `${id}.json`), JSON.stringify(request));
    return id;
  }

  async requestPending(id: string): Promise<boolean> {
    return (await readIfExists(join(this.dir, REQUEST_DIR, `${id}.json`))) !== undefined;
  }

  async takeRequests(lenses: string[]): Promise<Array<{ id: string; request: ControlRequest }>> {
    this.assertWritable();
    const dir = join(this.dir, REQUEST_DIR);
    const names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
    const taken: Array<{ id: string; request: ControlRequest }> = [];
    for (const name of names) {
      const request = parseRequest(await readIfExists(join(dir, name)));
      if (request && !lenses.includes(request.lens) && !isExpired(request)) continue;
      await rm(join(dir, name), { force: true });
      if (request) taken.push({ id: name.slice(0, -'.json'.length), request });
    }
    return taken;
  }

  /** Waits for writes in progress, then releases the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.readOnly) return;
    await Promise.allSettled([this.stateWriter.idle(), this.letterQueue]);
    await this.unlock();
  }

  private async load(): Promise<void> {
    // Leftovers of writes a crash interrupted; the files they were replacing are intact.
    await rm(join(this.dir, STATE_FILE + '.tmp'), { force: true });
    await rm(join(this.dir, DEAD_LETTER_FILE + '.tmp'), { force: true });
    this.values = await readState(this.dir);
    await mkdir(join(this.dir, REQUEST_DIR), { recursive: true });
    const { letters, torn } = await parseDeadLetters(this.dir);
    this.letters = letters;
    // A torn last line (crash mid-append) would glue onto the next append: drop it now.
    if (torn) await writeAtomically(join(this.dir, DEAD_LETTER_FILE), letters.map((l) => JSON.stringify(l) + '\n').join(''));
    for (const l of letters) {
      const m = /^dl_(\d+)_(\d+)$/.exec(l.id);
      if (m) this.bumpId(Number(m[1]), Number(m[2]));
    }
  }

  private writeState(): Promise<void> {
    const text = JSON.stringify(Object.fromEntries(this.values), null, 2) + '\n';
    return writeAtomically(join(this.dir, STATE_FILE), text);
  }

  /** `dl_<ms, 13 digits>_<counter, 6 digits>`: sortable, and increasing across restarts. */
  private nextId(): string {
    const now = Date.now();
    if (now > this.lastId.time) this.lastId = { time: now, counter: 0 };
    else this.lastId.counter++;
    const { time, counter } = this.lastId;
    return `dl_${String(time).padStart(13, '0')}_${String(counter).padStart(6, '0')}`;
  }

  private bumpId(time: number, counter: number): void {
    const last = this.lastId;
    if (time > last.time || (time === last.time && counter > last.counter)) this.lastId = { time, counter };
  }

  private onLetterFile<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.letterQueue.then(fn);
    this.letterQueue = result.catch(() => undefined);
    return result;
  }

  private assertOpen(): void {
    if (this.closed) throw new TributaryError(`The state store in ${this.dir} is closed`);
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) {
      throw new TributaryError(`The state store in ${this.dir} was opened read-only; only the running daemon writes it`);
    }
  }
}

/**
 * Runs `write` one at a time. A request made while a write runs waits for the next write,
 * which every request made in the meantime shares; so a request resolves only after a write
 * that started after it has finished.
 */
class CoalescingWriter {
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  constructor(private readonly write: () => Promise<void>) {}

  request(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.running) return this.start();
    this.queued = this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.start();
      });
    return this.queued;
  }

  /** Resolves when no write is running or queued (errors are the requesters' to see). */
  async idle(): Promise<void> {
    while (this.queued ?? this.running) await (this.queued ?? this.running)!.catch(() => undefined);
  }

  private start(): Promise<void> {
    const run = this.write().finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }
}

/** Copies `value` through JSON, so what is stored is exactly what a later read returns. */
function toJson(what: string, value: unknown): unknown {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`State value for ${what} is not JSON-serialisable`);
  return JSON.parse(text);
}

async function readState(dir: string): Promise<Map<string, unknown>> {
  const path = join(dir, STATE_FILE);
  const text = await readIfExists(path);
  if (text === undefined) return new Map();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new TributaryError(
      `${path} is not valid JSON (${(err as Error).message}). It is only ever replaced whole, so it was edited ` +
        'or damaged outside Tributary: restore it from a backup, or delete it to start from scratch (sources resume from their earliest retained position).',
      { cause: err },
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new TributaryError(`${path} must hold a JSON object of key/values; restore it from a backup or delete it`);
  }
  return new Map(Object.entries(parsed));
}

async function readDeadLetters(dir: string): Promise<DeadLetter[]> {
  return (await parseDeadLetters(dir)).letters;
}

/** Reads the dead-letter file; a last line without its newline (torn by a crash or a concurrent append) is left out. */
async function parseDeadLetters(dir: string): Promise<{ letters: DeadLetter[]; torn: boolean }> {
  const path = join(dir, DEAD_LETTER_FILE);
  const text = (await readIfExists(path)) ?? '';
  const lines = text.split('\n');
  const last = lines.pop() ?? '';
  const letters: DeadLetter[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      letters.push(JSON.parse(line) as DeadLetter);
    } catch (err) {
      throw new TributaryError(`${path}, line ${i + 1}: not a JSON dead letter; fix or delete that line`, { cause: err });
    }
  });
  return { letters, torn: last !== '' };
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Replaces `path` with `text` so that a crash leaves either the old or the new file, whole. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = path + '.tmp';
  const file = await open(tmp, 'w');
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
  await syncDirectory(dirname(path));
}

async function appendDurably(path: string, text: string): Promise<void> {
  const file = await open(path, 'a');
  let created = false;
  try {
    created = (await file.stat()).size === 0;
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  if (created) await syncDirectory(dirname(path));
}

/** Sweep snapshots as one directory per snapshot and one JSON-lines file per bucket. */
class FileSnapshots implements SnapshotStore {
  constructor(private readonly dir: string) {}

  async write(name: string): Promise<SnapshotWriter> {
    const next = join(this.dir, `${name}.next`);
    await rm(next, { recursive: true, force: true });
    await mkdir(next, { recursive: true });
    const file = (bucket: number) => join(next, `${bucket}.jsonl`);
    const written = new Set<number>();
    return {
      async append(bucket, entries) {
        if (entries.length === 0) return;
        written.add(bucket);
        await appendFile(file(bucket), entries.map((e) => JSON.stringify(e) + '\n').join(''));
      },
      read: (bucket) => readEntries(file(bucket)).then((e) => e ?? []),
      commit: async () => {
        for (const bucket of written) {
          const handle = await open(file(bucket), 'r');
          await handle.sync().finally(() => handle.close());
        }
        await syncDirectory(next);
        // committed → .old, next → committed, then .old goes: a crash in between leaves .old readable.
        const committed = join(this.dir, name);
        const old = join(this.dir, `${name}.old`);
        await rm(old, { recursive: true, force: true });
        await rename(committed, old).catch((err) => {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        });
        await rename(next, committed);
        await syncDirectory(this.dir);
        await rm(old, { recursive: true, force: true });
      },
      abort: () => rm(next, { recursive: true, force: true }),
    };
  }

  async remove(name: string): Promise<void> {
    for (const dir of [name, `${name}.old`, `${name}.next`]) await rm(join(this.dir, dir), { recursive: true, force: true });
  }

  async read(name: string, bucket: number): Promise<SnapshotEntry[] | undefined> {
    for (const dir of [name, `${name}.old`]) {
      try {
        await access(join(this.dir, dir));
      } catch {
        continue;
      }
      return (await readEntries(join(this.dir, dir, `${bucket}.jsonl`))) ?? [];
    }
    return undefined;
  }
}

async function readEntries(path: string): Promise<SnapshotEntry[] | undefined> {
  const text = await readIfExists(path);
  if (text === undefined) return undefined;
  const entries: SnapshotEntry[] = [];
  for (const line of text.split('\n')) if (line !== '') entries.push(JSON.parse(line) as SnapshotEntry);
  return entries;
}

/** A request file's content; undefined when it is damaged or not a request (dropped). */
function parseRequest(text: string | undefined): ControlRequest | undefined {
  try {
    const parsed = text === undefined ? undefined : (JSON.parse(text) as ControlRequest);
    return typeof parsed?.lens === 'string' ? parsed : undefined;
  } catch {
    return undefined;
  }
}
