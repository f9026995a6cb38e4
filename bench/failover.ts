/**
 * Failover with `replicas: 2`: two daemons share a postgres state store; while a writer inserts
 * 100 rows/s, the active one is killed with SIGKILL. Measured: kill → the standby holds the
 * source lease (`tributary_source_active` 1), and kill → the first row committed after the kill
 * reaches the sink; against the reference of the same run, a cold start (spawn → streaming).
 * Also checks that every committed row was delivered.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort, type TestPostgres } from '../test/helpers/postgres.js';
import { startSemilayerServer } from '../test/helpers/semilayer-server.js';
import { fmt, progress, spawnDaemonYaml, tempDir, until, type Row } from './lib.js';

const RATE = 100; // inserts/s

export async function failover(cluster: TestPostgres, rows: Row[]): Promise<void> {
  progress(`failover: two replicas, kill -9 of the active one while ${RATE} rows/s are inserted`);
  const db = await cluster.createDatabase('bench_failover');
  await cluster.query(db, `CREATE TABLE fo (id int PRIMARY KEY)`);
  const sink = await startSemilayerServer();
  try {
    const ports = [await freePort(), await freePort()];
    const yaml = (port: number) => `
sources:
  app: { type: postgres, url: ${db}, slot: bench_failover, publication: bench_failover, statusIntervalMs: 1000 }
lenses:
  fo: { source: app, table: public.fo, sink: loopback, initialSync: none, maxWaitMs: 20 }
sinks:
  loopback: { type: semilayer, url: ${sink.url}, key: ik_test }
state: { type: postgres, url: ${db}, schema: tributary_failover }
metrics: { listen: 127.0.0.1:${port} }
log: { level: info }
`;
    const active = async (port: number) => {
      const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '');
      return /^tributary_source_active\{source="app"\} 1$/m.test(text);
    };
    const first = spawnDaemonYaml(yaml(ports[0]), ports[0], tempDir('failover-'));
    const coldStartMs = await first.ready;
    const second = spawnDaemonYaml(yaml(ports[1]), ports[1], tempDir('failover-'));
    await until(async () => second.output().includes('standing by'), 'the second replica to stand by', 30_000, 20);

    const writer = new pg.Client({ connectionString: db });
    await writer.connect();
    let next = 1;
    let writing = true;
    const writing$ = (async () => {
      while (writing) {
        await writer.query('INSERT INTO fo VALUES ($1)', [next]);
        next++;
        await sleep(1000 / RATE);
      }
    })();
    await sleep(2000);
    const lastBeforeKill = next - 1;
    const killedAt = performance.now();
    const killedAtEpoch = Date.now();
    process.kill(first.pid, 'SIGKILL');
    await until(() => active(ports[1]), 'the standby to take the lease', 30_000, 10);
    const leaseMs = performance.now() - killedAt;
    await until(() => sink.received('fo').some((c) => Number(c.id) > lastBeforeKill), 'a row committed after the kill', 30_000, 5);
    const firstAfter = sink.requests.find((r) => r.lens === 'fo' && r.changes?.some((c) => Number(c.id) > lastBeforeKill))!;
    const deliveredMs = firstAfter.receivedAt - killedAtEpoch;
    await sleep(1000);
    writing = false;
    await writing$;
    await writer.end();
    const written = next - 1;
    await until(() => sink.lastAction('fo').size === written, `all ${written} rows at the sink`, 30_000, 20);
    await second.stop();
    progress(`  cold start ${fmt(coldStartMs)} ms; kill → lease ${fmt(leaseMs)} ms; kill → first new row delivered ${fmt(deliveredMs)} ms; ${fmt(written)} rows, all delivered`);
    rows.push({
      metric: 'Failover: kill -9 of the active replica → standby holds the lease (ms)',
      tributary: fmt(leaseMs),
      reference: `cold start, spawn → streaming ${fmt(coldStartMs)}`,
      goal: `${(leaseMs / coldStartMs).toFixed(2)} (goal: within seconds)`,
      pass: leaseMs < 5000 ? 'yes' : 'no',
    });
    rows.push({
      metric: '  kill -9 → first row committed after the kill delivered by the standby (ms)',
      tributary: fmt(deliveredMs),
      reference: `cold start ${fmt(coldStartMs)}`,
      goal: `${(deliveredMs / coldStartMs).toFixed(2)}; ${fmt(written)} of ${fmt(written)} rows delivered`,
      pass: 'info',
    });
  } finally {
    await sink.close();
  }
}
