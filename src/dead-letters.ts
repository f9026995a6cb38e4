/**
 * The dead-letter queue of every lens, over the state store: what a sink rejected (a 4xx) or
 * the worker could not index, with its reason, attempts and provenance. The pipeline and the
 * worker engine both keep their letters here, so `tributary dlq` and `status` see one queue.
 *
 * - Counts are read from the store at start (a restart shows the letters it found), and
 *   again every few seconds when replicas share the lenses.
 * - A letter is never dropped because the store hiccuped: `add` retries until it is stored.
 * - Replays and listings go page by page, so memory stays bounded however many letters
 *   there are; a replayed page is removed only once its changes were delivered.
 */
import { TributaryError, describeError } from './errors.js';
import { retry } from './retry.js';
import { MAX_BATCH, type DeadLetter, type Logger, type RecordChange, type StateStore } from './types.js';

/** Letters read from the store at once. */
const PAGE_LETTERS = 500;

export type NewDeadLetter = Omit<DeadLetter, 'id' | 'firstSeen' | 'lastSeen'>;

export class DeadLetters {
  private readonly counts = new Map<string, number>();

  constructor(
    private readonly store: StateStore,
    private readonly log: Logger,
  ) {}

  /**
   * Counts the stored letters of these lenses: at start, and again every few seconds while
   * other replicas read the same lenses (they add, replay and drop letters too).
   */
  async load(lenses: string[]): Promise<void> {
    for (const [lens, n] of await this.store.countDeadLetters(lenses)) this.counts.set(lens, n);
  }

  /** Letters of a lens (dead-lettered items, not changes). */
  count(lens: string): number {
    return this.counts.get(lens) ?? 0;
  }

  /** Stores a letter, retrying until the store takes it. Throws only if `signal` aborts first. */
  async add(letter: NewDeadLetter, signal?: AbortSignal): Promise<void> {
    const at = new Date().toISOString();
    await retry(() => this.store.addDeadLetter({ ...letter, firstSeen: at, lastSeen: at }), {
      retriable: () => true,
      initialMs: 500,
      maxMs: 10_000,
      signal,
      onRetry: (err, attempt) => this.log.error({ lens: letter.lens, attempt, err: describeError(err) }, 'cannot write the dead-letter store; retrying'),
    });
    this.counts.set(letter.lens, this.count(letter.lens) + 1);
  }

  /** The letters of a lens (all, or those with `ids`), oldest first, a page at a time. */
  async *pages(lens: string, ids?: string[]): AsyncGenerator<DeadLetter[]> {
    const wanted = ids && new Set(ids);
    let after: string | undefined;
    for (;;) {
      const page = await this.store.listDeadLetters(lens, { after, limit: PAGE_LETTERS });
      if (page.length === 0) return;
      after = page[page.length - 1].id;
      const chosen = wanted ? page.filter((l) => wanted.has(l.id)) : page;
      if (chosen.length > 0) yield chosen;
    }
  }

  /**
   * Delivers the letters' changes again, at most MAX_BATCH changes at a time: `deliver`
   * resolves true once the sink accepted them (a new rejection makes a new letter), and only
   * then are those letters removed. Stops at the first chunk not delivered (the daemon is
   * stopping): its letters stay. Returns the letters replayed.
   */
  async replay(lens: string, ids: string[] | undefined, deliver: (changes: RecordChange[]) => Promise<boolean>): Promise<number> {
    let replayed = 0;
    for await (const page of this.pages(lens, ids)) {
      for (const chunk of chunksOfChanges(page)) {
        if (!(await deliver(chunk.flatMap((l) => l.provenance.changes ?? [])))) {
          throw new TributaryError(`lens "${lens}": the daemon stopped before the replayed changes were delivered; ${replayed} letter(s) replayed, the rest are kept`);
        }
        replayed += await this.remove(lens, chunk);
      }
    }
    return replayed;
  }

  /** Removes letters of a lens (all, or those with `ids`) without delivering them. */
  async drop(lens: string, ids?: string[]): Promise<number> {
    let dropped = 0;
    for await (const page of this.pages(lens, ids)) dropped += await this.remove(lens, page);
    return dropped;
  }

  private async remove(lens: string, letters: DeadLetter[]): Promise<number> {
    const removed = await this.store.removeDeadLetters(letters.map((l) => l.id));
    this.counts.set(lens, Math.max(0, this.count(lens) - removed));
    return removed;
  }
}

/** Letters grouped so each group carries at most MAX_BATCH changes (a bigger letter goes alone). */
function* chunksOfChanges(letters: DeadLetter[]): Generator<DeadLetter[]> {
  let chunk: DeadLetter[] = [];
  let changes = 0;
  for (const letter of letters) {
    const n = letter.provenance.changes?.length ?? 0;
    if (chunk.length > 0 && changes + n > MAX_BATCH) {
      yield chunk;
      chunk = [];
      changes = 0;
    }
    chunk.push(letter);
    changes += n;
  }
  if (chunk.length > 0) yield chunk;
}
