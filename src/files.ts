/** File-system helpers shared by the embedded stores: directory fsync and one-writer locks. */
import { open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TributaryError } from './errors.js';

/** A lock file younger than this without a pid is being written by its taker. */
const LOCK_GRACE_MS = 5_000;
/** Directories this process holds a lock on. */
const lockedHere = new Set<string>();

/** fsyncs a directory, so a rename or a new file in it survives a power loss. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch (err) {
    // Some platforms (Windows) cannot fsync a directory; nothing more can be done there.
    if (!['EPERM', 'EISDIR', 'EINVAL'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  } finally {
    await handle.close();
  }
}

/** Words for the lock's error messages: `the state directory`, `Tributary daemon`, `state.path`. */
export interface LockWords {
  file: string;
  kind: string;
  owner: string;
  setting: string;
  /** Appended to the advice, e.g. which commands may run beside the owner. */
  besides?: string;
}

/**
 * Takes `<dir>/<file>` with O_EXCL, holding this process's pid, so only one process writes the
 * directory. A lock whose pid is not running is stale and taken over; so is one holding our own
 * pid that this process does not hold (left by an earlier process with the same pid, as after a
 * container restart). Two processes taking over one stale lock at the same instant are not told
 * apart. Returns the function that releases it.
 */
export async function lockDirectory(dir: string, words: LockWords): Promise<() => Promise<void>> {
  const path = join(dir, words.file);
  const advice = `Only one ${words.owner} may write ${words.kind}: stop the other one, or give this one its own ${words.setting}.${words.besides ? ` ${words.besides}` : ''}`;
  const held = (pid: number) =>
    pid === process.pid
      ? new TributaryError(`${capitalise(words.kind)} ${dir} is already open for writing in this process (pid ${pid}, ${path}). ${advice}`)
      : new TributaryError(
          `${capitalise(words.kind)} ${dir} is in use: it is locked by pid ${pid} (${path}). ${advice} ` +
            `If pid ${pid} is not a ${words.owner}, delete ${path} and start again.`,
        );
  for (let attempt = 0; ; attempt++) {
    if (lockedHere.has(dir)) throw held(process.pid);
    try {
      const file = await open(path, 'wx');
      try {
        await file.writeFile(`${process.pid}\n`);
        await file.sync();
      } finally {
        await file.close();
      }
      lockedHere.add(dir);
      return async () => {
        if (!lockedHere.delete(dir)) return;
        if ((await readLock(path)) === process.pid) await rm(path, { force: true }); // only if still ours
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw err;
    }
    const holder = await readLock(path);
    if (holder === 'unknown') {
      throw new TributaryError(
        `${capitalise(words.kind)} ${dir} is being locked by another process right now (${path} holds no pid yet). ` +
          `Only one ${words.owner} may write ${words.kind}; try again, or give this one its own ${words.setting}.`,
      );
    }
    if (holder !== undefined && holder !== process.pid && isAlive(holder)) throw held(holder);
    await rm(path, { force: true }); // stale: its process is gone
  }
}

/** The pid in the lock file; undefined if it is gone or stale without one; 'unknown' if just created. */
async function readLock(path: string): Promise<number | undefined | 'unknown'> {
  try {
    const pid = Number((await readFile(path, 'utf8')).trim());
    if (Number.isInteger(pid) && pid > 0) return pid;
    return Date.now() - (await stat(path)).mtimeMs < LOCK_GRACE_MS ? 'unknown' : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // it exists but belongs to someone else
  }
}

function capitalise(text: string): string {
  return text[0].toUpperCase() + text.slice(1);
}
