/**
 * The MySQL binlog connector on a throwaway MariaDB: a backlog of BENCH_MYSQL_BACKLOG inserted
 * rows (default 2,000,000) in the binlog, read
 * - by the reference, `mariadb-binlog --read-from-remote-server --verbose` (rows decoded to
 *   text, output discarded), over the same range of the same binlog;
 * - by the daemon (child process, semilayer sink on loopback), from its saved position until
 *   the sink has counted every change; with its peak RSS (VmHWM).
 */
import { spawn } from 'node:child_process';
import mysql from 'mysql2/promise';
import { startMariadb, ROOT_PASSWORD } from '../test/helpers/mariadb.js';
import { freePort } from '../test/helpers/postgres.js';
import { startSemilayerServer } from '../test/helpers/semilayer-server.js';
import { MB, fmt, progress, spawnDaemonYaml, tempDir, timeBacklog, type Row } from './lib.js';

const BACKLOG = Number(process.env.BENCH_MYSQL_BACKLOG ?? 2_000_000);

export async function mysqlBinlog(rows: Row[]): Promise<void> {
  progress(`mysql: backlog of ${fmt(BACKLOG)} inserted rows in a MariaDB binlog`);
  const [server, sink] = await Promise.all([
    startMariadb({ settings: { max_binlog_size: '1G', innodb_buffer_pool_size: '512M', innodb_log_file_size: '512M' } }),
    startSemilayerServer({ recordChanges: false }),
  ]);
  try {
    const url = await server.createDatabase('bench');
    await server.query('CREATE TABLE items (id BIGINT PRIMARY KEY, payload VARCHAR(100) NOT NULL)', [], 'bench');
    const stateDir = tempDir('mysql-state-');
    const metricsPort = await freePort();
    const yaml = `
sources:
  app: { type: mysql, url: "${url}" }
lenses:
  items: { source: app, table: items, sink: loopback, initialSync: none, maxWaitMs: 200 }
sinks:
  loopback: { type: semilayer, url: ${sink.url}, key: ik_test, timeoutMs: 30000 }
state: { type: embedded, path: ${stateDir} }
metrics: { listen: 127.0.0.1:${metricsPort} }
log: { level: info }
`;
    // A first run saves the position before the backlog, as a daemon that was down would have.
    const first = spawnDaemonYaml(yaml, metricsPort, stateDir);
    await first.ready;
    await first.stop();

    const [start] = (await server.query("SHOW MASTER STATUS")) as Array<{ File: string; Position: string }>;
    const writer = await mysql.createConnection({ uri: url });
    const at = performance.now();
    for (let from = 1; from <= BACKLOG; from += 10_000) {
      const values = [];
      for (let id = from; id < Math.min(from + 10_000, BACKLOG + 1); id++) values.push(`(${id}, 'payload of row ${id}')`);
      await writer.query(`INSERT INTO items VALUES ${values.join(',')}`);
    }
    await writer.end();
    const [end] = (await server.query('SHOW MASTER STATUS')) as Array<{ File: string; Position: string }>;
    progress(`  backlog written in ${((performance.now() - at) / 1000).toFixed(1)} s (${start?.File ?? end.File} → ${end.File}:${end.Position})`);

    // The reference: mariadb-binlog reading the same range from the server.
    const refStart = performance.now();
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        'mariadb-binlog',
        ['--read-from-remote-server', '--host=127.0.0.1', `--port=${server.port}`, '--user=root', `--password=${ROOT_PASSWORD}`, '--verbose', '--base64-output=DECODE-ROWS', `--stop-position=${end.Position}`, end.File],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mariadb-binlog exited with ${code}: ${stderr}`))));
    });
    const refSeconds = (performance.now() - refStart) / 1000;
    progress(`  mariadb-binlog --verbose read it in ${refSeconds.toFixed(2)} s (${fmt(BACKLOG / refSeconds)} rows/s)`);

    const { rate, streamingRate, rss } = await timeBacklog(yaml, metricsPort, stateDir, (lens) => sink.counts(lens), 'items', BACKLOG);
    rows.push({
      metric: `MySQL binlog → delivered batches, ${fmt(BACKLOG)}-row backlog (changes/s from spawn; once streaming)`,
      tributary: `${fmt(rate)}; ${fmt(streamingRate)}`,
      reference: `mariadb-binlog --verbose: ${fmt(BACKLOG / refSeconds)} rows/s`,
      goal: `${fmt(rate / (BACKLOG / refSeconds), 2)}×; ${fmt(streamingRate / (BACKLOG / refSeconds), 2)}× the reference`,
      pass: 'info',
    });
    rows.push({
      metric: `MySQL: peak RSS (VmHWM) catching up ${fmt(BACKLOG)} changes (MB)`,
      tributary: fmt(rss / MB, 1),
      reference: '—',
      goal: 'bounded (pipeline.maxPendingChanges)',
      pass: 'info',
    });
  } finally {
    await sink.close();
    await server.stop();
  }
}
