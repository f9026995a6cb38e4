/**
 * Prometheus metrics. The hot path keeps plain counters on its own objects; they are read
 * into prom-client when scraped (`collect`), so capturing a change costs no metric call.
 * Connectors never import this module.
 */
import client from 'prom-client';

export interface LensCounters {
  captured: number;
  coalesced: number;
  delivered: number;
  pending: number;
  /** 1 while an operator paused the lens. */
  paused: number;
}

/** What smart sync sweeps expose per lens (see src/sweep.ts SweepProgress). */
export interface SweepGauges {
  rows: number;
  total?: number;
  upserts: number;
  deletes: number;
  completed: number;
}

export interface SourceGauges {
  lagBytes?: number;
  retainedBytes?: number;
  /** Streams: how far the slowest shard is behind the stream's tip, ms. */
  lagMs?: number;
  /** Streams: records of tables no lens reads, skipped since the connector started. */
  skippedRecords?: number;
  /** Kafka: messages between the group's committed offsets and the ends of the partitions this replica owns. */
  lagMessages?: number;
  paused: boolean;
  /** This process reads the source (holds its lease); false while it stands by. */
  active: boolean;
}

/** What the worker engine exposes for metrics (see src/worker/engine.ts). */
export interface WorkerMetricsSource {
  lenses(): string[];
  counters(lens: string): { embedCalls: number; embeddedTexts: number; skippedByHash: number; writtenRecords: number; tokensUsed: number; tokensSaved: number };
  status(): Array<{ lens: string; pending: number; indexed: number; dlq: number; graphBacklog: number }>;
}

/** A label value and its number (undefined: not known, left out). */
type Row = [string, number | undefined];

export class Metrics {
  readonly registry = new client.Registry();
  private readonly lenses = new Map<string, LensCounters>();
  private readonly sources = new Map<string, SourceGauges>();
  private sweeps: () => Array<[string, SweepGauges]> = () => [];

  readonly batches = new client.Counter({
    name: 'tributary_batches_total',
    help: 'Batches handled by sinks, by outcome (delivered, dead_lettered, full_sync)',
    labelNames: ['lens', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly batchSize = new client.Histogram({
    name: 'tributary_batch_size',
    help: 'Changes per delivered batch',
    labelNames: ['lens'] as const,
    buckets: [1, 10, 100, 500, 1000, 2500, 5000, 10000],
    registers: [this.registry],
  });
  readonly latency = new client.Histogram({
    name: 'tributary_commit_to_delivered_seconds',
    help: 'Time from the source commit of a change to its acceptance by the sink',
    labelNames: ['lens'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly sinkErrors = new client.Counter({
    name: 'tributary_sink_errors_total',
    help: 'Failed sink requests by class (transient, rate-limited, rejected, fatal)',
    labelNames: ['lens', 'class'] as const,
    registers: [this.registry],
  });
  readonly unmatched = new client.Counter({
    name: 'tributary_changes_unmatched_total',
    help: 'Row changes of a table no lens claims although it could belong to one (a partition or child of a lens table, a table in the publication)',
    labelNames: ['source', 'table'] as const,
    registers: [this.registry],
  });
  readonly deadLetters = new client.Counter({
    name: 'tributary_dead_letters_total',
    help: 'Changes sent to the dead-letter store',
    labelNames: ['lens'] as const,
    registers: [this.registry],
  });

  constructor() {
    const lenses = this.lenses;
    const sources = this.sources;
    const fromLenses = (key: keyof LensCounters) => () => [...lenses].map(([lens, c]): Row => [lens, c[key]]);
    this.collected('Counter', 'lens', 'tributary_changes_captured_total', 'Row changes read from sources', fromLenses('captured'));
    this.collected('Counter', 'lens', 'tributary_changes_coalesced_total', 'Changes merged into a pending change of the same id', fromLenses('coalesced'));
    this.collected('Counter', 'lens', 'tributary_changes_delivered_total', 'Changes accepted by sinks (after coalescing)', fromLenses('delivered'));
    this.collected('Gauge', 'lens', 'tributary_pending_changes', 'Changes waiting for or in delivery', fromLenses('pending'));
    this.collected('Gauge', 'lens', 'tributary_lens_paused', '1 while an operator paused the lens (tributary pause)', fromLenses('paused'));
    const fromSweeps = (read: (g: SweepGauges) => number | undefined) => () => this.sweeps().map(([lens, g]): Row => [lens, read(g)]);
    this.collected('Gauge', 'lens', 'tributary_sweep_rows', 'Rows read by the smart sync sweep in progress (or the last one)', fromSweeps((g) => g.rows));
    this.collected('Gauge', 'lens', 'tributary_sweep_progress_ratio', 'Rows read by the sweep in progress over the rows of the last complete sweep', fromSweeps((g) => (g.total ? Math.min(1, g.rows / g.total) : undefined)));
    this.collected('Gauge', 'lens', 'tributary_sweep_upserts', 'Upserts found by the sweep in progress (or the last one)', fromSweeps((g) => g.upserts));
    this.collected('Gauge', 'lens', 'tributary_sweep_deletes', 'Deletes (tombstones) found by the sweep in progress (or the last one)', fromSweeps((g) => g.deletes));
    this.collected('Counter', 'lens', 'tributary_sweeps_completed_total', 'Smart sync sweeps completed', fromSweeps((g) => g.completed));
    const fromSources = (read: (g: SourceGauges) => number | undefined) => () => [...sources].map(([source, g]): Row => [source, read(g)]);
    this.collected('Gauge', 'source', 'tributary_replication_lag_bytes', 'WAL between the server and the last acknowledged position', fromSources((g) => g.lagBytes));
    this.collected('Gauge', 'source', 'tributary_retained_wal_bytes', 'WAL the replication slot keeps on the server', fromSources((g) => g.retainedBytes));
    this.collected('Gauge', 'source', 'tributary_stream_lag_seconds', 'Streams (Kinesis): how far the slowest shard is behind the tip (MillisBehindLatest)', fromSources((g) => (g.lagMs === undefined ? undefined : g.lagMs / 1000)));
    this.collected('Gauge', 'source', 'tributary_consumer_lag_messages', "Kafka: messages between the consumer group's committed offsets and the partitions' ends, over the partitions this replica owns", fromSources((g) => g.lagMessages));
    this.collected('Counter', 'source', 'tributary_stream_skipped_records_total', 'Streams (Kinesis): records of tables no lens reads, skipped', fromSources((g) => g.skippedRecords));
    this.collected('Gauge', 'source', 'tributary_source_paused', '1 while a source is paused by backpressure', fromSources((g) => (g.paused ? 1 : 0)));
    this.collected('Gauge', 'source', 'tributary_source_active', '1 while this replica reads the source, 0 while it stands by (another replica holds the source)', fromSources((g) => (g.active ? 1 : 0)));
    client.collectDefaultMetrics({ register: this.registry, prefix: 'tributary_' });
  }

  /** A counter or gauge whose values are read from `rows` (label value, number) when scraped. */
  private collected(type: 'Counter' | 'Gauge', label: 'lens' | 'source', name: string, help: string, rows: () => Row[]): void {
    const labelNames = [label];
    const registers = [this.registry];
    if (type === 'Counter') {
      new client.Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const [value, n] of rows()) if (n !== undefined) this.inc({ [label]: value }, n);
        },
      });
      return;
    }
    new client.Gauge({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const [value, n] of rows()) if (n !== undefined) this.set({ [label]: value }, n);
      },
    });
  }

  readonly embedSeconds = new client.Histogram({
    name: 'tributary_worker_embed_seconds',
    help: 'Duration of one embedding call (a batch of texts, or a search query)',
    labelNames: ['lens'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly freshness = new client.Histogram({
    name: 'tributary_worker_freshness_seconds',
    help: 'From the oldest source commit (or API acceptance) of a worker job to its rows being searchable',
    labelNames: ['lens'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
    registers: [this.registry],
  });

  /** Exposes the bundled worker's counters and gauges, read when scraped. */
  attachWorker(worker: WorkerMetricsSource): void {
    const counter = (key: keyof ReturnType<WorkerMetricsSource['counters']>) => () => worker.lenses().map((lens): Row => [lens, worker.counters(lens)[key]]);
    const gauge = (key: 'pending' | 'indexed' | 'dlq' | 'graphBacklog') => () => worker.status().map((s): Row => [s.lens, s[key]]);
    this.collected('Counter', 'lens', 'tributary_worker_embedding_calls_total', 'Calls to the embedder (indexing and search queries)', counter('embedCalls'));
    this.collected('Counter', 'lens', 'tributary_worker_embedded_texts_total', 'Texts embedded (indexing and search queries)', counter('embeddedTexts'));
    this.collected('Counter', 'lens', 'tributary_worker_hash_skips_total', 'Rows whose text was unchanged, so not embedded again', counter('skippedByHash'));
    this.collected('Counter', 'lens', 'tributary_worker_written_records_total', 'Records written to the index: new or changed rows, and metadata-only updates (searchable once counted)', counter('writtenRecords'));
    this.collected('Counter', 'lens', 'tributary_worker_tokens_total', 'Embedding tokens used (reported by the provider, or estimated)', counter('tokensUsed'));
    this.collected('Counter', 'lens', 'tributary_worker_tokens_saved_total', 'Embedding tokens not spent thanks to unchanged-text skips (estimated)', counter('tokensSaved'));
    this.collected('Gauge', 'lens', 'tributary_worker_queued_changes', 'Changes queued or being indexed by the worker', gauge('pending'));
    this.collected('Gauge', 'lens', 'tributary_worker_indexed_records', 'Records in the index', gauge('indexed'));
    this.collected('Gauge', 'lens', 'tributary_worker_dead_letters', 'Items in the dead-letter queue', gauge('dlq'));
    this.collected('Gauge', 'lens', 'tributary_worker_graph_backlog', 'Records not yet in the embedded index\'s HNSW graph (searched exactly meanwhile)', gauge('graphBacklog'));
  }

  lens(name: string): LensCounters {
    let c = this.lenses.get(name);
    if (!c) this.lenses.set(name, (c = { captured: 0, coalesced: 0, delivered: 0, pending: 0, paused: 0 }));
    return c;
  }

  /** Exposes the smart sync sweeps' progress, read when scraped. */
  attachSweeps(read: () => Array<[string, SweepGauges]>): void {
    this.sweeps = read;
  }

  source(name: string): SourceGauges {
    let g = this.sources.get(name);
    if (!g) this.sources.set(name, (g = { paused: false, active: false }));
    return g;
  }
}
