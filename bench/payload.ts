/**
 * Payload sinks (seyn, psykhe), `tributary run` as a child process on a logical source, to
 * loopback servers in the bench process.
 *
 * 1. Throughput: a backlog of BENCH_PAYLOAD_ROWS inserts (default 200,000) into `items`, read
 *    by three slots, one per sink: `semilayer` (ids only: the reference), `seyn` and `psykhe`
 *    (each id's row re-read, one query per 1,000 ids, and sent with its payload). Rows/s from
 *    spawn until the sink counted every row, and the daemon's CPU time; BENCH_PAYLOAD_ROUNDS
 *    rounds (default 4) of a new backlog each, in turn in one order and the reverse. The goal is
 *    ≥ 0.5 of the semilayer id path, for the median of the rounds' ratios.
 * 2. Peak RSS (VmHWM) of the daemon during a `psykhe` full sync of BENCH_PSYKHE_ROWS rows
 *    (default 1,000,000): one gzip soft_replace request streaming the whole table.
 */
import { freePort, type TestPostgres } from '../test/helpers/postgres.js';
import { startPsykheServer } from '../test/helpers/psykhe-server.js';
import { startSemilayerServer } from '../test/helpers/semilayer-server.js';
import { SEYN_SOURCE_ID, startSeynServer } from '../test/helpers/seyn-server.js';
import { MB, fmt, progress, spawnDaemonYaml, tempDir, until, type Row, type RunningDaemon } from './lib.js';

const ROWS = Number(process.env.BENCH_PAYLOAD_ROWS ?? 200_000);
/** Rounds of the backlog, each read by the three sinks in turn: run-to-run noise is ±10% or more. */
const ROUNDS = Number(process.env.BENCH_PAYLOAD_ROUNDS ?? 4);
const FULL_ROWS = Number(process.env.BENCH_PSYKHE_ROWS ?? 1_000_000);
const ITEMS = `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, description text, price numeric(10,2),
  updated_at timestamptz NOT NULL DEFAULT now())`;
/** Rows `from + 1` to `from + n`. */
const FILL = (n: number, from = 0) =>
  `INSERT INTO items (id, name, description, price) SELECT g, 'item ' || g, md5(g::text) || ' ' || md5((g + 1)::text), (g % 1000) / 10.0 FROM generate_series(${from + 1}, ${from + n}) g`;

const PSYKHE_PAYLOAD = ', payload: { product_identifier: id, title: name, description: description, price: price }';

/** The YAML of a daemon with one lens `lens` on `items` to `sink` (a flow-style map). */
async function daemonFor(db: string, lens: string, sink: string, initialSync: 'none' | 'full', extraLens = ''): Promise<RunningDaemon> {
  const stateDir = tempDir(`payload-state-${lens}-`);
  const metricsPort = await freePort();
  const yaml = `
sources:
  app: { type: postgres, url: ${db}, slot: ${lens}, publication: ${lens} }
lenses:
  ${lens}: { source: app, table: public.items, sink: s, initialSync: ${initialSync}, maxWaitMs: 50${extraLens} }
sinks:
  s: ${sink}
state: { type: embedded, path: ${stateDir} }
metrics: { listen: 127.0.0.1:${metricsPort} }
log: { level: info }
`;
  return spawnDaemonYaml(yaml, metricsPort, stateDir);
}

export async function payloadSinks(cluster: TestPostgres, rows: Row[]): Promise<void> {
  await throughput(cluster, rows);
  const psykhe = await startPsykheServer({ keepIds: false, keepData: false, maxBodyBytes: 2 ** 30 });
  try {
    await fullSyncRss(cluster, psykhe, rows);
  } finally {
    await psykhe.close();
  }
}

/**
 * The three loopback servers of one round and each lens's sink on them. Fresh ones every round:
 * what the servers store grows with each backlog, and would slow later rounds.
 */
async function loopbackSinks() {
  const [semilayer, seyn, psykhe] = await Promise.all([
    startSemilayerServer({ recordChanges: false }),
    startSeynServer({ keepHistory: false, keepRecords: false }),
    startPsykheServer({ keepIds: false, keepData: false }),
  ]);
  const sinks = [
    { lens: 'payload_ids', sink: `{ type: semilayer, url: ${semilayer.url}, key: ik_test }`, counted: () => semilayer.counts('payload_ids') },
    { lens: 'payload_seyn', sink: `{ type: seyn, url: ${seyn.url}, key: sk_live_test, sourceId: ${SEYN_SOURCE_ID} }`, counted: () => seyn.stored('payload_seyn') },
    { lens: 'payload_psykhe', sink: `{ type: psykhe, url: ${psykhe.url}, key: sk_test_bench }`, counted: () => psykhe.catalog('sk_test_bench').size, extra: PSYKHE_PAYLOAD },
  ];
  return { sinks, close: () => Promise.all([semilayer.close(), seyn.close(), psykhe.close()]) };
}

async function throughput(cluster: TestPostgres, rows: Row[]): Promise<void> {
  progress(`payload sinks: ${ROUNDS} rounds of a backlog of ${fmt(ROWS)} inserts to semilayer (ids), seyn and psykhe (rows)`);
  const db = await cluster.createDatabase('bench_payload');
  await cluster.query(db, ITEMS);
  const lenses = [
    ['payload_ids', 'semilayer'],
    ['payload_seyn', 'seyn'],
    ['payload_psykhe', 'psykhe'],
  ] as const;
  const runs = new Map(lenses.map(([lens]) => [lens as string, [] as Array<{ rate: number; cpu: number }>]));
  const ids = runs.get('payload_ids')!;
  for (let round = 0; round <= ROUNDS; round++) {
    const { sinks, close } = await loopbackSinks();
    try {
      // Round 0 only creates the three slots; each round after writes a backlog read by each in turn.
      // Each slot's restart point moves past the rounds before (else every round decodes the WAL
      // of the round before it again, which slows the id path most); then the round's backlog,
      // and a checkpoint (else Postgres writes the backlog's pages out while the first sink runs).
      if (round > 0) {
        await cluster.query(db, `CHECKPOINT; SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) FROM pg_replication_slots WHERE database = current_database()`);
        await cluster.query(db, `SET synchronous_commit = on; ${FILL(ROWS, (round - 1) * ROWS)}`);
        await cluster.query(db, 'CHECKPOINT');
      }
      // Every other round runs the sinks in reverse order: the id path goes first or last alike,
      // and seyn and psykhe take turns reading the new rows first (which costs Postgres more: it
      // sets their hint bits).
      for (const s of round % 2 ? sinks : [...sinks].reverse()) {
        const d = await daemonFor(db, s.lens, s.sink, 'none', s.extra);
        if (round === 0) {
          await d.ready;
        } else {
          const start = performance.now();
          await until(() => s.counted() >= ROWS, `${s.lens}: every row delivered`, 900_000, 20);
          const run = { rate: ROWS / ((performance.now() - start) / 1000), cpu: d.cpuSeconds() };
          runs.get(s.lens)!.push(run);
          progress(`  round ${round}, ${s.lens}: ${fmt(run.rate)} rows/s, daemon CPU ${run.cpu.toFixed(2)} s, peak RSS ${fmt(d.peakRss() / MB, 1)} MB`);
        }
        const code = await d.stop();
        if (code !== 0) throw new Error(`daemon exited with ${code}:\n${d.output().slice(-2000)}`);
      }
    } finally {
      await close();
    }
  }
  for (const [lens, name] of lenses.slice(1)) {
    const own = runs.get(lens)!;
    // Each round's ratio pairs runs seconds apart, so a slower machine for a while weighs on both.
    const ratios = own.map((r, i) => r.rate / ids[i].rate);
    const ratio = median(ratios);
    const perRound = ratios.map((r) => r.toFixed(2)).join(' / ');
    rows.push({
      metric: `Payload sink ${name}: backlog of ${fmt(ROWS)} inserts, rows re-read and sent (rows/s from spawn; medians of ${ROUNDS} rounds)`,
      tributary: `${fmt(median(own.map((r) => r.rate)))} (daemon CPU ${median(own.map((r) => r.cpu)).toFixed(2)} s)`,
      reference: `semilayer id path ${fmt(median(ids.map((r) => r.rate)))} (daemon CPU ${median(ids.map((r) => r.cpu)).toFixed(2)} s); each round: ${perRound}`,
      goal: `${ratio.toFixed(2)}, the median round (goal ≥ 0.5)`,
      pass: ratio >= 0.5 ? 'yes' : 'no',
    });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function fullSyncRss(cluster: TestPostgres, psykhe: Awaited<ReturnType<typeof startPsykheServer>>, rows: Row[]): Promise<void> {
  progress(`payload sinks: psykhe full sync of ${fmt(FULL_ROWS)} rows (one soft_replace)`);
  const db = await cluster.createDatabase('bench_psykhe_full');
  await cluster.query(db, `${ITEMS}; ${FILL(FULL_ROWS)}`);
  await cluster.query(db, "VACUUM ANALYZE items");
  const d = await daemonFor(db, 'psykhe_full', `{ type: psykhe, url: ${psykhe.url}, key: sk_test_full, timeoutMs: 600000 }`, 'full', PSYKHE_PAYLOAD);
  const start = performance.now();
  await until(() => psykhe.catalog('sk_test_full').size >= FULL_ROWS, 'the whole catalog', 1_800_000, 100);
  const seconds = (performance.now() - start) / 1000;
  const rss = d.peakRss();
  const request = psykhe.requests.find((r) => r.key === 'sk_test_full')!;
  progress(`  ${seconds.toFixed(1)} s (${fmt(FULL_ROWS / seconds)} rows/s), ${fmt(request.bytes / MB, 1)} MB gzip body, peak RSS ${fmt(rss / MB, 1)} MB`);
  const code = await d.stop();
  if (code !== 0) throw new Error(`daemon exited with ${code}:\n${d.output().slice(-2000)}`);
  rows.push({
    metric: `Payload sink psykhe: full sync of ${fmt(FULL_ROWS)} rows as one soft_replace, peak RSS (VmHWM) of the daemon (MB)`,
    tributary: fmt(rss / MB, 1),
    reference: `${fmt(FULL_ROWS / seconds)} rows/s; ${fmt(request.bytes / MB, 1)} MB gzip body in one request`,
    goal: 'goal ≤ 200',
    pass: rss / MB <= 200 ? 'yes' : 'no',
  });
}
