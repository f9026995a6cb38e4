/**
 * Debezium Server (https://debezium.io/documentation/reference/stable/operations/debezium-server.html)
 * capturing a throwaway Postgres into the test Kafka broker (or an HTTP receiver), for tests and benchmarks that need
 * real Debezium change events. The distribution comes from Maven Central
 * (`io.debezium:debezium-server-dist:<DEBEZIUM_VERSION>:tar.gz`, fetched by `.ci/run` or on first
 * use into test/kafka/debezium-server, ~/.m2 caching it) and runs on a Java 21+ JDK:
 * `DEBEZIUM_JAVA_HOME`, else the Temurin JDK at /usr/lib/jvm/temurin-25-jdk-amd64.
 *
 * Settings are Debezium Server's `debezium.source.*` (the PostgreSQL connector:
 * https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-connector-properties),
 * `debezium.sink.kafka.producer.*` (or `debezium.sink.http.url`) and `debezium.format.*`; `unwrap` adds the
 * ExtractNewRecordState transform (https://debezium.io/documentation/reference/stable/transformations/event-flattening.html).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { eventually } from './cli.js';
import { freePort } from './postgres.js';

export const DEBEZIUM_VERSION = '3.0.0.Final';
const HOME = resolve(import.meta.dirname, '../../../test/kafka');
const JAVA_HOME = process.env.DEBEZIUM_JAVA_HOME ?? '/usr/lib/jvm/temurin-25-jdk-amd64';

/** The unpacked distribution (`debezium-server/`), fetched from Maven Central when missing. */
export function debeziumServer(): string {
  const dir = join(HOME, 'debezium-server');
  if (existsSync(join(dir, 'run.sh'))) return dir;
  const download = join(HOME, 'download');
  mkdirSync(download, { recursive: true });
  execFileSync('mvn', ['-q', 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy', `-Dartifact=io.debezium:debezium-server-dist:${DEBEZIUM_VERSION}:tar.gz`, `-DoutputDirectory=${download}`], { stdio: 'inherit' });
  const tarball = readdirSync(download).find((f) => f.endsWith('.tar.gz'))!;
  execFileSync('tar', ['xzf', join(download, tarball), '-C', HOME]);
  return dir;
}

export interface DebeziumOptions {
  /** Where events go: `{ kafka: '127.0.0.1:PORT' }` (the Kafka sink) or `{ http: URL }` (the HTTP sink, one POST per event). */
  sink: { kafka: string } | { http: string };
  pgPort: number;
  database: string;
  /** `topic.prefix`: topics are `<prefix>.<schema>.<table>`. */
  prefix: string;
  /** `schema.table` list to capture. */
  tables: string[];
  /** The JSON converter's `{ schema, payload }` wrapper on keys and values (default true). */
  schemas?: boolean;
  /** ExtractNewRecordState with `__op`, `__schema`, `__table`, `__source_ts_ms` and `__deleted` (default false). */
  unwrap?: boolean;
  /** `snapshot.mode` (default `initial`; `no_data`: stream from the slot's creation only). */
  snapshot?: 'initial' | 'no_data';
}

export interface RunningDebezium {
  output(): string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const jvm of running) jvm.kill('SIGKILL');
});

/** Starts Debezium Server; resolves once its health endpoint reports UP (it then snapshots and streams). */
export async function startDebezium(o: DebeziumOptions): Promise<RunningDebezium> {
  const home = debeziumServer();
  const dir = mkdtempSync(join(tmpdir(), 'tributary-debezium-'));
  const port = await freePort();
  const properties = applicationProperties(o, dir, port);
  mkdirSync(join(dir, 'config'));
  writeFileSync(join(dir, 'config', 'application.properties'), properties);
  // run.sh reads config/ relative to the working directory: run from `dir` with the distribution's jars.
  const classpath = [join(home, 'debezium-server-dist-' + DEBEZIUM_VERSION + '-runner.jar'), join(dir, 'config'), join(home, 'lib', '*')].join(':');
  const child = spawn(join(JAVA_HOME, 'bin', 'java'), ['-Xmx384m', '-cp', classpath, 'io.debezium.server.Main'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out = (out + d).slice(-30_000)));
  child.stderr!.on('data', (d) => (out = (out + d).slice(-30_000)));
  running.add(child);
  child.on('exit', () => running.delete(child));
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`Debezium Server exited ${child.exitCode}:\n${out}`);
    const res = await fetch(`http://127.0.0.1:${port}/q/health`).catch(() => undefined);
    return res?.status === 200 && ((await res.json()) as { status?: string }).status === 'UP';
  }, 'Debezium Server to report UP', 120_000);
  return {
    output: () => out,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((done) => child.once('exit', done));
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((done) => setTimeout(done, 10_000))]);
        child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function applicationProperties(o: DebeziumOptions, dir: string, httpPort: number): string {
  const schemas = o.schemas ?? true;
  const slot = `dbz_${o.prefix.replace(/[^a-z0-9_]/g, '_')}`;
  const lines = [
    `quarkus.http.port=${httpPort}`,
    'quarkus.http.host=127.0.0.1',
    'quarkus.log.level=WARN',
    'quarkus.log.console.json=false',
    ...('kafka' in o.sink
      ? [
          'debezium.sink.type=kafka',
          `debezium.sink.kafka.producer.bootstrap.servers=${o.sink.kafka}`,
          'debezium.sink.kafka.producer.key.serializer=org.apache.kafka.common.serialization.StringSerializer',
          'debezium.sink.kafka.producer.value.serializer=org.apache.kafka.common.serialization.StringSerializer',
        ]
      : ['debezium.sink.type=http', `debezium.sink.http.url=${o.sink.http}`]),
    'debezium.format.key=json',
    'debezium.format.value=json',
    `debezium.format.key.schemas.enable=${schemas}`,
    `debezium.format.value.schemas.enable=${schemas}`,
    'debezium.source.connector.class=io.debezium.connector.postgresql.PostgresConnector',
    `debezium.source.offset.storage.file.filename=${join(dir, 'offsets.dat')}`,
    'debezium.source.offset.flush.interval.ms=0',
    'debezium.source.database.hostname=127.0.0.1',
    `debezium.source.database.port=${o.pgPort}`,
    'debezium.source.database.user=postgres',
    'debezium.source.database.password=postgres',
    `debezium.source.database.dbname=${o.database}`,
    `debezium.source.topic.prefix=${o.prefix}`,
    `debezium.source.table.include.list=${o.tables.join(',')}`,
    'debezium.source.plugin.name=pgoutput',
    `debezium.source.slot.name=${slot}`,
    `debezium.source.publication.name=${slot}`,
    'debezium.source.publication.autocreate.mode=filtered',
    `debezium.source.snapshot.mode=${o.snapshot ?? 'initial'}`,
    // Truncates are skipped unless asked for (skipped.operations defaults to t).
    'debezium.source.skipped.operations=none',
    'debezium.source.tombstones.on.delete=true',
  ];
  if (o.unwrap) {
    lines.push(
      'debezium.transforms=unwrap',
      'debezium.transforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState',
      'debezium.transforms.unwrap.add.fields=op,schema,table,source.ts_ms',
      'debezium.transforms.unwrap.delete.tombstone.handling.mode=rewrite-with-tombstone',
    );
  }
  return lines.join('\n') + '\n';
}
