/**
 * Writes to the state store that are not on the delivery path (acknowledged positions, lens
 * flags, status snapshots): each is retried a few times, and one that still fails is logged
 * and remembered until a later write of the same kind succeeds, so `/readyz` and the status
 * say the daemon cannot record its progress instead of the failure being swallowed.
 */
import { describeError } from './errors.js';
import { retry } from './retry.js';
import type { Logger } from './types.js';

const ATTEMPTS = 4;

export class StateWrites {
  private readonly failing = new Map<string, string>();

  constructor(private readonly log: Logger) {}

  /** Runs `write` (kind `what`, e.g. `position of source app`); false when it failed for good. */
  async run(what: string, write: () => Promise<unknown>): Promise<boolean> {
    try {
      await retry(write, { retriable: () => true, maxAttempts: ATTEMPTS, initialMs: 200, maxMs: 2000 });
      if (this.failing.delete(what)) this.log.info({ what }, 'the state store takes writes again');
      return true;
    } catch (err) {
      if (!this.failing.has(what)) this.log.error({ what, err: describeError(err) }, 'cannot write to the state store; progress is not being recorded');
      this.failing.set(what, describeError(err));
      return false;
    }
  }

  /** What cannot be written now, one line each. */
  problems(): string[] {
    return [...this.failing].map(([what, err]) => `state store: cannot write the ${what} (${err})`);
  }
}
