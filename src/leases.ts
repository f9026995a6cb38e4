/**
 * Replicas: a pipeline starts only once this process holds its source's lease in the state
 * store (`StateStore.lease`), so with several replicas sharing a postgres state store exactly
 * one reads each source and the others stand by (state `standby`, gauge
 * `tributary_source_active` 0) until the active one dies. A source that divides its work among
 * replicas itself (`SourceCapabilities.sharedReading`: a Kafka consumer group) takes no lease:
 * every replica reads it.
 */
import type { Metrics } from './metrics.js';
import type { Pipeline } from './pipeline.js';
import type { Lease, Logger, StateStore } from './types.js';

export class SourceLeases {
  /** Pipelines this process reads now. */
  readonly active = new Set<Pipeline>();
  /** Resolves if a source fails after the start: its lease was lost, or it could not start after taking over. */
  readonly failed: Promise<Error>;
  private onFailed!: (err: Error) => void;
  private readonly held: Lease[] = [];
  private readonly stopping = new AbortController();

  constructor(
    private readonly state: StateStore,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.failed = new Promise<Error>((resolve) => (this.onFailed = resolve));
  }

  /**
   * Takes the source's lease and starts the pipeline. Resolves once it streams, or as soon as
   * another replica is found holding the lease (it then starts later, when it takes over).
   */
  activate(p: Pipeline): Promise<void> {
    if (p.sharedReading) return this.run(p, 'the source shares its work among replicas itself; starting without a lease');
    return new Promise<void>((resolve, reject) => {
      let standingBy = false;
      const waiting = () => {
        standingBy = true;
        this.metrics.source(p.sourceName).active = false;
        p.state('standby', `another replica reads source ${p.sourceName}; taking over when it stops`);
        this.log.info({ source: p.sourceName }, 'another replica reads this source; standing by');
        resolve();
      };
      this.state
        .lease(`source/${p.sourceName}`, { signal: this.stopping.signal, waiting })
        .then(async (lease) => {
          this.held.push(lease);
          void lease.lost.then(this.onFailed);
          await this.run(p, 'holding the source lease; starting');
        })
        .then(resolve, (err) => {
          if (this.stopping.signal.aborted) return;
          if (standingBy) this.onFailed(err);
          else reject(err);
        });
    });
  }

  /** Starts reading the source. */
  private async run(p: Pipeline, message: string): Promise<void> {
    this.active.add(p);
    this.metrics.source(p.sourceName).active = true;
    this.log.info({ source: p.sourceName }, message);
    await p.start();
  }

  /** Stops waiting for leases (standbys give up). */
  abort(): void {
    this.stopping.abort();
  }

  async release(): Promise<void> {
    await Promise.all(this.held.map((l) => l.release()));
  }
}
